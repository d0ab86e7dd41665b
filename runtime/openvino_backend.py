"""OpenVINO on the CPU behind the backend protocol: ``infer(image) -> alpha``, fp32 or native bf16.

Runs the portable ONNX graphs, or OpenVINO IR (``.xml`` with its ``.bin`` beside it) made from
them by :func:`spgim.export.openvino_ir.export_openvino_ir`. Both branches are compiled for the
CPU with a latency hint, one thread per physical core unless told otherwise, and an inference
precision of f32 or bf16. bf16 counts only where the CPU runs it natively (AVX512_BF16 or AMX):
elsewhere OpenVINO would quietly run f32 under the bf16 name, so :func:`openvino_unavailable`
refuses it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError
from spgim.machine import NATIVE_BF16_FLAGS, cpu_facts

from .artifacts import Artifact
from .protocol import batch_slices, check_fixed_batch, fixed_batch, recurrent_state, state_or_zeros

OPENVINO_PIN = "openvino==2026.4.1"
# OpenVINO's names for the precisions this backend runs: an int8 IR runs its quantized operations in int8 and
# the ones kept in float in f32, as its export's accuracy gate measured it.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_unavailable(precision: str) -> str | None:
    """Why OpenVINO cannot run ``precision`` on this machine (one line), or None when it can.

    Args:
        precision: ``"fp32"``, ``"bf16"`` or ``"int8"``; bf16 needs a CPU with native bf16 arithmetic (int8 runs
            on every CPU OpenVINO supports; its speed is the bench's to say).
    """
    if precision not in PRECISION_HINTS:
        return f"openvino runs {', '.join(list(PRECISION_HINTS)[:-1])} or {list(PRECISION_HINTS)[-1]}, not {precision}"
    try:
        import openvino  # noqa: F401  (the import is the probe: the wheel may be absent or broken)
    except (ImportError, OSError):
        return f"openvino is not installed: pip install {OPENVINO_PIN}"
    if precision != "bf16":
        return None
    try:
        capabilities = [str(c) for c in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception as error:  # a broken install fails in C++ (RuntimeError) or in the bindings' own types
        return f"openvino cannot query the CPU plugin: {_first_line(error)}"
    if "BF16" in capabilities:
        return None
    found = [flag for flag in NATIVE_BF16_FLAGS if cpu_facts()["flags"][flag]]
    return (
        f"openvino bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX): this CPU's OPTIMIZATION_CAPABILITIES "
        f"are {', '.join(capabilities)} and /proc/cpuinfo has {', '.join(found) or 'neither avx512_bf16 nor amx_bf16'}"
        "; run fp32, or bf16 on such a CPU"
    )


@functools.cache
def shared_core() -> Any:
    """One ``openvino.Core`` for the process, never released.

    Every compiled model and request is made from it and it outlives them all: with a Core per backend,
    released while its compiled models lived on, the full test suite died of SIGSEGV (no Python traceback)
    at a later garbage collection.
    """
    import openvino

    return openvino.Core()


def _first_line(error: BaseException) -> str:
    """The most telling line of an OpenVINO error (its messages start with 'Exception from src/...')."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (telling or lines or [type(error).__name__])[0][:200]


def _compile(core: Any, path: Path, *, precision: str, threads: int) -> Any:
    """Read an ONNX or IR file and compile it for the CPU with this backend's settings."""
    if path.suffix == ".xml" and not path.with_suffix(".bin").is_file():
        raise SpgimError(f"{path.name} is OpenVINO IR but {path.with_suffix('.bin').name} is missing beside it")
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads or cpu_facts()["physical_cores"],
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
    }
    try:
        return core.compile_model(core.read_model(str(path)), "CPU", config)
    except RuntimeError as error:  # OpenVINO raises RuntimeError for unreadable or unsupported graphs
        raise SpgimError(f"OpenVINO cannot load {path.name}: {_first_line(error)}") from None


def _check_usable(precision: str) -> None:
    reason = openvino_unavailable(precision)
    if reason is not None:
        raise SpgimError(reason)


def _element_dtype(port: Any) -> np.dtype:
    """The numpy dtype of a compiled model's input (f32 for the fp32 graphs, f16 for fp16 ONNX)."""
    return np.dtype(port.get_element_type().to_dtype())


class OpenVINOBackend:
    """SPD -> SPGM compiled by OpenVINO for the CPU, in fp32 or (native only) bf16.

    Args:
        spd: SPD's portable ONNX (``.onnx``) or OpenVINO IR (``.xml``) artifact.
        spgm: SPGM's artifact of the same format.
        precision: ``"fp32"`` or ``"bf16"`` (``INFERENCE_PRECISION_HINT``; the graphs stay fp32 files), or ``"int8"``
            (the NNCF-quantized IR, the rest of it in f32).
        threads: ``INFERENCE_NUM_THREADS``; 0 means one per physical core.
    """

    device = "cpu"

    def __init__(self, spd: Artifact, spgm: Artifact, *, precision: str = "fp32", threads: int = 0) -> None:
        _check_usable(precision)

        kind = "ir" if spgm.path.suffix == ".xml" else "onnx"
        self.name = f"openvino ({kind}, {precision})"
        core = shared_core()
        self.spd = _compile(core, spd.path, precision=precision, threads=threads)
        self.spgm = _compile(core, spgm.path, precision=precision, threads=threads)
        self.spd_request = self.spd.create_infer_request()
        self.spgm_request = self.spgm.create_infer_request()
        self.state_tensors = recurrent_state(spgm.sidecar)
        self.spgm_inputs = [port.get_any_name() for port in self.spgm.inputs]
        spd_outputs = {port.get_any_name() for port in self.spd.outputs}
        expected = [item["name"] for item in spgm.sidecar.get("inputs", [])]
        states = {t.name for t in self.state_tensors}
        # SPD's outputs in the order SPGM takes them after the image; a recurrent SPGM's state follows.
        self.feature_names = [name for name in self.spgm_inputs if name != "image" and name not in states]
        missing = [name for name in self.feature_names if name not in spd_outputs]
        if missing or (expected and expected != self.spgm_inputs):
            raise SpgimError(
                f"{spgm.path.name} takes {', '.join(self.spgm_inputs)} (sidecar: {', '.join(expected) or 'none'}) "
                f"but {spd.path.name} gives {', '.join(sorted(spd_outputs))}; export the pair again"
            )
        self.dtype = _element_dtype(self.spd.input(0))
        first = self.spd.input(0).get_partial_shape()[0]
        self.fixed = fixed_batch([first.get_length() if first.is_static else None])

    def infer(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``(N, 1, H, W)`` float32 for an image ``(N, 3, H, W)`` float32 in [0, 1]."""
        # Graphs exported without --dynamic have a fixed batch (1): larger batches run in slices.
        check_fixed_batch(len(image), self.fixed, self.name)
        parts = batch_slices(len(image), self.fixed)
        return np.concatenate([self.run_spgm(image[part], self.run_spd(image[part])) for part in parts])

    # Copies in and out, no share_inputs/share_outputs: with shared numpy buffers a request keeps pointing at
    # arrays Python may free, and one full test run died of SIGSEGV (not reproduced alone); the copies are
    # milliseconds against the model's time.
    def run_spd(self, image: np.ndarray) -> tuple[np.ndarray, ...]:
        """SPD's outputs in the order SPGM takes them after ``image``."""
        x = np.ascontiguousarray(image, dtype=self.dtype)
        features = self.spd_request.infer({"image": x}).to_dict()
        by_name = {port.get_any_name(): np.array(value) for port, value in features.items()}
        return tuple(by_name[name] for name in self.feature_names)

    def run_spgm(
        self, image: np.ndarray, features: Sequence[np.ndarray], state: Sequence[np.ndarray] | None = None
    ) -> Any:
        """Alpha float32; with ``state``, ``(alpha, new_state)`` (see :meth:`~.protocol.Backend.run_spgm`)."""
        zeros = functools.partial(np.zeros, dtype=self.dtype)
        given = state_or_zeros(self.state_tensors, state, image.shape, self.name, zeros)
        names = [*self.feature_names, *(t.name for t in self.state_tensors)]
        values = (*features, *given)
        feed = {name: np.ascontiguousarray(x, dtype=self.dtype) for name, x in zip(names, values, strict=True)}
        feed["image"] = np.ascontiguousarray(image, dtype=self.dtype)
        results = self.spgm_request.infer(feed)
        alpha = np.array(results[0], dtype=np.float32)
        if state is None:
            return alpha
        by_name = {port.get_any_name(): value for port, value in results.to_dict().items()}
        return alpha, tuple(np.array(by_name[t.output]) for t in self.state_tensors)


def resnet50_openvino(onnx_path: Path, image: np.ndarray, *, precision: str, threads: int) -> Callable[[], Any]:
    """The ResNet-50 ceiling compiled as :class:`OpenVINOBackend` compiles SPG-IM.

    Args:
        onnx_path: a ResNet-50 ONNX graph with one image input.
        image: the batch it runs on, ``(N, 3, H, W)``.
        precision: ``"fp32"`` or ``"bf16"``.
        threads: ``INFERENCE_NUM_THREADS``; 0 means one per physical core.

    Returns:
        A zero-argument call that runs one inference and returns the logits ``(N, 1000)``.
    """
    _check_usable(precision)

    compiled = _compile(shared_core(), Path(onnx_path), precision=precision, threads=threads)
    request = compiled.create_infer_request()
    feed = {0: np.ascontiguousarray(image, dtype=_element_dtype(compiled.input(0)))}

    def run() -> Any:
        return request.infer(feed)[0]

    return run
