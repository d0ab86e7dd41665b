"""INT8 post-training quantization of an SPD/SPGM pair, and the accuracy gate it must pass to be written.

Three quantize fp32 ONNX graphs, each its own documented way (:mod:`spgim.int8_build`): ONNX Runtime's QDQ static
quantization (``onnx``), NNCF's post-training quantization to OpenVINO IR (``openvino``), and the symmetric QDQ
graphs TensorRT builds int8 engines from (``onnx-trt``; its gate runs them on the CPU twin).

Both branches are quantized together: SPGM is calibrated on what the fp32 SPD gives it. Then the gate runs the
quantized pair on held-out generated scenes (:func:`.calibration.gate_scenes`) against the fp32 pair: the mean
absolute difference of the alphas, and SAD and MSE against the true alpha for both. A pair that misses the gate is
not written (unless the user accepts the loss); its numbers go in the sidecars either way.

Layers kept in float, chosen by measurement: the pair is first quantized whole; where it misses the gate, the steps
of :data:`FLOAT_LADDER` keep more of it in float, the parts whose quantization was measured to cost the most alpha
accuracy first (docs/export.md, "INT8"), until a step passes. Every step tried is recorded in the sidecars.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError
from spgim.int8_build import ENGINES, QUANTIZERS

from .calibration import BranchFeeds, Scenes

# What each step keeps in float: per branch, regular expressions over node names (the module path of the ONNX
# graph, e.g. /levels.0/body/body.0/body.0.0/Conv, which OpenVINO keeps with suffixes). On the shipped live pair
# (320x192, the default calibration, alpha mean abs difference from fp32 on the 64 gate scenes): all int8 0.0126
# (ONNX Runtime) and 0.0192 (NNCF); SPGM's decoder levels (AFT) in float 0.0074 and 0.0190; with SPD in float as
# well (NNCF) 0.0098. No other single part (the TST attention, the encoder, the heads, one level) moved ONNX
# Runtime's min/max calibration below 0.018 (docs/export.md, "INT8").
FLOAT_LADDER: tuple[tuple[str, dict[str, tuple[str, ...]]], ...] = (
    ("nothing", {"spd": (), "spgm": ()}),
    ("SPGM's decoder levels (AFT)", {"spd": (), "spgm": (r"^/levels\.",)}),
    ("SPGM's decoder levels and SPD", {"spd": (r".",), "spgm": (r"^/levels\.",)}),
)

Run = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Gate:
    """What a quantized pair must keep: its alpha's mean absolute difference from fp32's at most
    ``max_mean_abs_diff``, and its SAD against the truth at most ``1 + max_sad_increase`` times fp32's."""

    max_mean_abs_diff: float = 1e-2
    max_sad_increase: float = 0.03


def runner(fmt: str, path: Path) -> Run:
    """One graph of ``fmt`` on the CPU in fp32 arithmetic where not quantized: feeds by name -> outputs in order.

    ``onnx-trt``'s QDQ graphs run in ONNX Runtime with the plugin's C++ reference for their ``TSTAttention`` nodes
    (:mod:`spgim.tst_twin`): the integer arithmetic their Q/DQ nodes define, which TensorRT's int8 engine follows.
    """
    if fmt == "onnx-trt":
        from spgim.tst_twin import twin_session

        twin = twin_session(path)
        return lambda feed: list(twin.run(None, feed))
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # a QDQ graph's unused-initializer warnings, one per node: errors only
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda feed: list(session.run(None, feed))
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda feed: [np.asarray(value) for value in compiled(feed).values()]


def measure(run_spd: Run, run_spgm: Run, spgm_inputs: list[str], scenes: Scenes, reference: BranchFeeds) -> dict:
    """The quantized pair against the fp32 pair on the gate ``scenes``: alpha mean/max absolute difference, and
    whole-image SAD (sum of absolute errors / 1000) and MSE against the truth for both."""
    assert scenes.alphas is not None, "gate scenes carry their truth"
    diffs, sad, sad_fp32, mse, mse_fp32 = [], [], [], [], []
    for image, truth, feed, fp32 in zip(scenes.images, scenes.alphas, reference.spgm, reference.alpha, strict=True):
        features = run_spd({"image": image})
        state = [feed[name] for name in spgm_inputs[1 + len(features) :]]
        alpha = run_spgm(dict(zip(spgm_inputs, [image, *features, *state], strict=True)))[0][0, 0]
        diffs.append(np.abs(alpha - fp32))
        sad.append(float(np.abs(alpha - truth).sum()) / 1000)
        sad_fp32.append(float(np.abs(fp32 - truth).sum()) / 1000)
        mse.append(float(np.square(alpha - truth).mean()))
        mse_fp32.append(float(np.square(fp32 - truth).mean()))
    return {
        "scenes": scenes.origin,
        "alpha_abs_diff": {
            "mean": float(np.mean([d.mean() for d in diffs])),
            "max": float(max(d.max() for d in diffs)),
        },
        "sad": {"int8": float(np.mean(sad)), "fp32": float(np.mean(sad_fp32))},
        "mse": {"int8": float(np.mean(mse)), "fp32": float(np.mean(mse_fp32))},
    }


def verdict(numbers: dict[str, Any], gate: Gate) -> tuple[bool, str]:
    """Whether ``numbers`` pass ``gate``, and one line saying how they compare with it."""
    diff = numbers["alpha_abs_diff"]["mean"]
    sad, sad_fp32 = numbers["sad"]["int8"], numbers["sad"]["fp32"]
    increase = sad / sad_fp32 - 1 if sad_fp32 > 0 else float("inf") if sad > 0 else 0.0
    passed = diff <= gate.max_mean_abs_diff and increase <= gate.max_sad_increase
    line = (
        f"alpha mean abs diff from fp32 {diff:.4f} (at most {gate.max_mean_abs_diff:g}), SAD {sad:.3f} against "
        f"fp32's {sad_fp32:.3f} ({100 * increase:+.1f}%, at most +{100 * gate.max_sad_increase:g}%)"
    )
    return passed, line


@dataclass
class QuantizedPair:
    """A quantized pair in a scratch folder, measured; :meth:`place` moves a branch to its final name."""

    fmt: str
    folder: Path
    files: dict[str, Path]
    facts: dict[str, Any]

    def place(self, branch: str, path: Path) -> None:
        """Move ``branch``'s file (and an IR's .bin) to ``path``; the scratch folder goes with the last one."""
        source = self.files.pop(branch)
        if source.suffix == ".xml":
            source.with_suffix(".bin").replace(path.with_suffix(".bin"))
        source.replace(path)
        if not self.files:
            shutil.rmtree(self.folder, ignore_errors=True)


def quantize_pair(
    fmt: str,
    sources: dict[str, Path],
    calibration: BranchFeeds,
    calibration_origin: str,
    gate_scenes: Scenes,
    gate_reference: BranchFeeds,
    spgm_inputs: list[str],
    *,
    scratch: Path,
    gate: Gate,
    accept_loss: bool,
    file_names: dict[str, str],
) -> QuantizedPair:
    """Quantize SPD and SPGM of ``fmt`` from their fp32 ONNX ``sources``, keeping more in float step by step
    (:data:`FLOAT_LADDER`) until the pair passes ``gate``.

    With ``accept_loss``, a pair that no step gets through is kept as the last step left it (the most accurate).

    Raises:
        SpgimError: no step passes and ``accept_loss`` is false (nothing is left behind), or the engine's
            quantizer fails.
    """
    folder = Path(tempfile.mkdtemp(prefix=f".int8-{fmt}-", dir=scratch))
    attempts: list[dict[str, Any]] = []
    try:
        files = {branch: folder / file_names[branch] for branch in ("spd", "spgm")}
        kept: dict[str, list[str]] = {}
        done: dict[str, tuple[str, ...]] = {}  # what each branch's file was last quantized with
        for step, patterns in FLOAT_LADDER:
            for branch in ("spd", "spgm"):
                if done.get(branch) == patterns[branch]:
                    continue  # this step keeps the same of it in float: the file stands
                feeds = calibration.spd if branch == "spd" else calibration.spgm
                kept[branch] = _quantize(fmt, sources[branch], files[branch], feeds, patterns[branch], branch)
                done[branch] = patterns[branch]
            run_spd, run_spgm = runner(fmt, files["spd"]), runner(fmt, files["spgm"])
            numbers = measure(run_spd, run_spgm, spgm_inputs, gate_scenes, gate_reference)
            passed, line = verdict(numbers, gate)
            attempts.append({"kept_in_float": step, "passed": passed, "summary": line})
            if passed:
                break
        if not passed and not accept_loss:
            tried = "; ".join(f"{a['kept_in_float']} in float: {a['summary']}" for a in attempts)
            raise SpgimError(
                f"the {fmt} int8 pair misses the accuracy gate ({tried}); calibrate on images like the ones you "
                "matte (--calibration DATA), or write it anyway with --accept-accuracy-loss"
            )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    facts = {
        "quantization": ENGINES[fmt],
        "calibration": calibration_origin,
        "kept_in_float": {"step": step, "patterns": patterns, "nodes": kept},
        "gate": {**asdict(gate), **numbers, "passed": passed, "summary": line},
        "attempts": attempts,
    }
    return QuantizedPair(fmt, folder, files, facts)


def _quantize(
    fmt: str, source: Path, target: Path, feeds: list[dict[str, np.ndarray]], patterns: tuple[str, ...], branch: str
) -> list[str]:
    """One branch through ``fmt``'s quantizer; its failures as one line."""
    try:
        return QUANTIZERS[fmt](source, target, feeds, patterns)
    except SpgimError:
        raise
    except Exception as error:  # the quantizers raise their own types, and RuntimeError from C++
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise SpgimError(f"{ENGINES[fmt]} failed on {branch}: {first}") from None
