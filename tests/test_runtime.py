"""The runtime: every CPU backend gives PyTorch eager's alpha; sidecar mismatches are refused."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from model_pairs import export_pair, random_pair

from spgim.cli import main
from spgim.errors import SpgimError
from spgim.runtime.matting import Matter, working_size
from spgim.runtime.registry import BACKENDS, usable_backends
from spgim.train.models.upsample import GuidedUpsampler


def _export(
    tmp: Path, seed: int, *, dynamic: bool = True, formats: str = "torchscript,onnx,onnx-trt"
) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    spd, spgm = random_pair(tmp, seed=seed)
    options = ["--formats", formats, "--height", "128", "--width", "128"]
    if dynamic:
        options += ["--dynamic", "--max-size", "256x256"]
    return export_pair(tmp, tmp / "model", *options), spd, spgm


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    return _export(tmp_path_factory.mktemp("runtime"), seed=0)


def _frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(2, 90, 150, 3), dtype=np.uint8)


def _eager(spd: torch.nn.Module, spgm: torch.nn.Module, frames: np.ndarray, work: int) -> np.ndarray:
    height, width = working_size(*frames.shape[1:3], work)
    resized = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    image = torch.from_numpy(resized.transpose(0, 3, 1, 2).copy()).float() / 255.0
    with torch.no_grad():
        # The CPU's default upsampling: the guided filter (computed by the runtime with OpenCV).
        return GuidedUpsampler()(spgm(image, *spd(image)), image, torch.from_numpy(frames))[:, 0].numpy()


@pytest.mark.parametrize(
    ("backend", "precision", "tolerance"),
    [
        ("onnxruntime", "fp32", 1e-4),
        ("onnxruntime-twin", "fp32", 1e-4),
        ("torchscript", "fp32", 1e-4),
        ("onnxruntime", "fp16", 1e-2),
        ("onnxruntime-twin", "fp16", 1e-2),
        ("torchscript", "bf16", 5e-2),
    ],
)
def test_every_backend_matches_eager(exported: tuple, backend: str, precision: str, tolerance: float) -> None:
    folder, spd, spgm = exported
    frames = _frames()
    expected = _eager(spd, spgm, frames, 128)
    matter = Matter(folder, backend=backend, precision=precision, work_size=128)
    alpha = matter(frames)
    assert alpha.shape == (2, 90, 150) and alpha.dtype == np.float32
    error = np.abs(alpha - expected)
    print(f"{matter.backend_name}: max {error.max():.2e} mean {error.mean():.2e}")
    assert (error.max() if precision == "fp32" else error.mean()) < tolerance
    assert matter(frames[0]).shape == (90, 150)


def test_auto_picks_the_fastest_measured_backend_and_says_which(exported: tuple) -> None:
    matter = Matter(exported[0])
    usable = usable_backends(exported[0])
    picked = matter.backend_name.split(" ")[0]
    assert picked in usable and BACKENDS[picked].in_auto
    ranking = json.loads((exported[0] / "spgim-ranking.json").read_text())
    (entry,) = ranking["entries"].values()
    timed = {t["backend"]: t["seconds"] for t in entry["trials"] if t["seconds"] is not None}
    assert set(timed) >= {"onnxruntime", "torchscript"} and picked == min(timed, key=lambda name: timed[name])
    assert matter.selection.startswith(f"auto picked {picked} fp32")
    assert matter.device == ("cpu" if BACKENDS[picked].device == "cpu" else "cuda:0")


@pytest.fixture(scope="module")
def fixed_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export without --dynamic: batch 1 and 128x128 only."""
    return _export(tmp_path_factory.mktemp("fixed"), seed=0, dynamic=False)[0]


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "batch-1-graph"])
@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-twin", "torchscript"])
def test_a_batch_of_frames_equals_one_call_per_frame(
    exported: tuple, fixed_export: Path, backend: str, dynamic: bool
) -> None:
    matter = Matter(exported[0] if dynamic else fixed_export, backend=backend, work_size=128)
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 160, 160, 3), dtype=np.uint8)
    batched = matter(frames)
    assert batched.shape == (3, 160, 160)
    np.testing.assert_allclose(batched, np.stack([matter(frame) for frame in frames]), atol=1e-5)


def test_mismatches_are_refused_with_one_line(exported: tuple, tmp_path: Path) -> None:
    folder = exported[0]
    with pytest.raises(SpgimError, match=r"outside spgm\.onnx's profile"):
        Matter(folder, backend="onnxruntime", work_size=512)(np.zeros((512, 512, 3), np.uint8))
    (tmp_path / "other").mkdir()
    other, _, _ = _export(tmp_path / "other", seed=1)
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    for name in ("spgm.onnx", "spgm.onnx.json"):
        shutil.copy(other / name, mixed / name)
    with pytest.raises(SpgimError, match="exported with another SPD"):
        Matter(mixed, backend="onnxruntime")
    truncated = tmp_path / "truncated"
    shutil.copytree(folder, truncated)
    data = (truncated / "spd.onnx").read_bytes()
    (truncated / "spd.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpgimError, match="truncated or replaced"):
        Matter(truncated)
    with pytest.raises(SpgimError, match="does not exist"):
        Matter(tmp_path / "nowhere")
    manifest = json.loads((folder / "spgim-export.json").read_text())
    assert not any(a["format"] == "engine" for a in manifest["artifacts"])
    with pytest.raises(SpgimError, match="onnxruntime has no bf16"):
        Matter(folder, backend="onnxruntime", precision="bf16")


def test_bench_writes_json_and_png(exported: tuple, tmp_path: Path) -> None:
    assert (
        main(
            [
                "bench",
                "--model",
                str(exported[0]),
                "--backend",
                "onnxruntime,torchscript",
                "--precision",
                "fp32,fp16",
                "--size",
                "64x64",
                "--warmup",
                "1",
                "--iters",
                "2",
                "--json",
                str(tmp_path / "b.json"),
                "--plot",
                str(tmp_path / "b.png"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "b.json").read_text())
    rows = {(r["backend"], r["precision"]) for r in report["rows"]}
    skipped = {(s["backend"], s["precision"]): s["reason"] for s in report["skipped"]}
    asked = {("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("torchscript", "fp32"), ("torchscript", "fp16")}
    assert rows | set(skipped) == asked and not rows & set(skipped)
    # TorchScript fp16 on a CPU without AVX512-FP16 is emulated: skipped with the reason, never timed.
    has_fp16 = report["machine"]["cpu"]["flags"]["avx512_fp16"]
    assert (("torchscript", "fp16") in rows) == has_fp16
    assert all("emulated" in reason for reason in skipped.values())
    assert report["machine"]["cpu"]["flags"].keys() >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert "onnxruntime" in report["machine"]["libraries"] and report["cpu_flags_line"]
    for row in report["rows"]:
        assert row["latency_s"]["p50"] > 0 and row["gflops_per_s"] > 0 and row["resnet50_gflops_per_s"] > 0
        assert row["ratio_to_resnet50"] == pytest.approx(row["gflops_per_s"] / row["resnet50_gflops_per_s"])
    assert {s["backend"] for s in report["reduced_vs_full"]} == {b for b, p in rows if p != "fp32"}
    assert all(s["alpha_abs_diff"]["mean"] < 1e-2 for s in report["reduced_vs_full"])
    rates = report["summary"]["best_rates"]  # the targets' form, one per precision that ran
    assert set(rates) == {p for _, p in rows}
    for precision, rate in rates.items():
        timed = [r for r in report["rows"] if r["precision"] == precision]
        assert rate["model"]["gflops_per_s"] == max(r["gflops_per_s"] for r in timed)
        assert rate["resnet50"]["gflops_per_s"] == max(r["resnet50_gflops_per_s"] for r in timed)
        assert rate["ratio"] == pytest.approx(rate["model"]["gflops_per_s"] / rate["resnet50"]["gflops_per_s"])
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_keeps_a_row_whose_ceiling_cannot_be_built(
    exported: tuple, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_ceiling(*_: object) -> None:
        raise SpgimError("AOTInductor needs a C++ compiler: apt-get install g++ (or set CXX to one)")

    record = dataclasses.replace(BACKENDS["onnxruntime"], ceiling=no_ceiling)
    monkeypatch.setitem(BACKENDS, "onnxruntime", record)
    command = ["bench", "--model", str(exported[0]), "--backend", "onnxruntime", "--precision", "fp32"]
    assert main([*command, "--size", "64x64", "--warmup", "0", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "no ResNet-50 ceiling for onnxruntime (onnx, fp32): AOTInductor needs a C++ compiler" in out
    assert re.search(r"onnxruntime \(onnx, fp32\)\s+fp32(\s+[0-9.]+){5}\s+-\s+-", out)
