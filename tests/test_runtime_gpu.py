"""GPU backends: their refusals and checks run everywhere; their parity tests run where a GPU is.

TensorRT engines, ONNX Runtime's CUDA and TensorRT providers and TorchScript on CUDA are skipped
(with the reason) where torch.cuda, tensorrt or onnxruntime-gpu is absent. What does not need a GPU
is tested here: the engine sidecar checks, the plugin lookup, the I/O-binding path (on ONNX
Runtime's CPU provider), the on-device pre/post-processing (on torch's CPU device) and ``auto``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from requirements import needs_hardware, not_this_machine
from test_runtime import _export, _frames

from spgim.cli import main
from spgim.errors import SpgimError
from spgim.runtime import bench
from spgim.runtime.artifacts import Artifact, check_engine_gpu, check_engine_tensorrt, load_artifacts, select_pair
from spgim.runtime.backends import OnnxRuntimeBackend, TorchScriptBackend
from spgim.runtime.device_frames import alpha_to_frames, frames_to_image, matte_on_device
from spgim.runtime.devices import unavailable_reason
from spgim.runtime.matting import Matter
from spgim.runtime.onnxruntime_gpu import OnnxRuntimeGpuBackend
from spgim.runtime.registry import BACKENDS, usable_backends
from spgim.tst_op import PLUGIN_LIBRARY, plugin_description
from spgim.tst_plugin import find_plugin_library, load_plugin_library

ROOT = Path(__file__).resolve().parents[1]
GPU_BACKENDS = ("tensorrt", "onnxruntime-trt", "onnxruntime-cuda", "torchscript-cuda")


def needs(backend: str) -> pytest.MarkDecorator:
    return needs_hardware(unavailable_reason(backend))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    return _export(tmp_path_factory.mktemp("runtime-gpu"), seed=0)


def _engine(sidecar: dict[str, Any]) -> Artifact:
    return Artifact("spgm", "engine", "fp32", Path("spgm.fp32.engine"), sidecar)


def _fake_engines(source: Path, target: Path) -> Path:
    """A copy of an ONNX export plus engine entries: sidecars as the exporter writes them, bytes not an engine."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "spgim-export.json").read_text())
    for branch, graph in (("spd", "spd.onnx"), ("spgm", "spgm.trt.onnx")):
        engine = target / f"{branch}.fp32.engine"
        engine.write_bytes(b"not a serialised TensorRT engine")
        sidecar = json.loads((target / f"{graph}.json").read_text())
        for key in ("opset", "onnx_flavour", "plugin"):
            sidecar.pop(key, None)
        sidecar.update(
            artifact=engine.name,
            format="engine",
            tensorrt_version="10.16.0.72",
            gpu="NVIDIA L4",
            compute_capability="0.1",  # no real GPU has it: a GPU machine refuses these fakes too
            strongly_typed=True,
            onnx_source=graph,
            artifact_bytes=engine.stat().st_size,
            artifact_sha256=hashlib.sha256(engine.read_bytes()).hexdigest(),
        )
        if branch == "spgm":
            sidecar["plugin"] = {**plugin_description(), "library": PLUGIN_LIBRARY}
        (target / f"{engine.name}.json").write_text(json.dumps(sidecar))
        manifest["artifacts"].append({"branch": branch, "format": "engine", "precision": "fp32", "file": engine.name})
    (target / "spgim-export.json").write_text(json.dumps(manifest))
    return target


def test_an_engine_on_a_machine_without_tensorrt_is_refused_in_one_line(
    exported: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _fake_engines(exported[0], tmp_path / "engines")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, on any machine
    message = r"spd\.fp32\.engine is a TensorRT 10\.16\.0\.72 engine but TensorRT is not installed here"
    with pytest.raises(SpgimError, match=message) as refused:
        Matter(folder, backend="tensorrt")
    assert "\n" not in str(refused.value)
    assert not Matter(folder).backend_name.startswith("tensorrt")  # auto skips the engines quietly
    command = ["bench", "--model", str(folder), "--backend", "tensorrt", "--precision", "fp32", "--size", "64x64"]
    assert main([*command, "--warmup", "0", "--iters", "1"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert re.match(r"spgim bench: error: nothing to bench on this machine: tensorrt fp32: tensorrt needs", line)
    # With a TensorRT of another minor version, then of the right one on a machine without that GPU.
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.15.1.29"))
    with pytest.raises(SpgimError, match=r"built with TensorRT 10\.16\.0\.72, this machine has TensorRT 10\.15\.1"):
        Matter(folder, backend="tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.16.1.11"))
    with pytest.raises(SpgimError, match=r"no CUDA GPU is visible here|\(compute capability 0\.1\), this GPU is"):
        Matter(folder, backend="tensorrt")


def test_engine_sidecar_tensorrt_version_must_match_major_minor() -> None:
    engine = _engine({"tensorrt_version": "10.16.0.72"})
    check_engine_tensorrt(engine, "10.16.1.11")
    with pytest.raises(SpgimError, match="not installed here"):
        check_engine_tensorrt(engine, None)
    for other in ("10.15.0.1", "11.1.0.2"):
        with pytest.raises(SpgimError, match=rf"built with TensorRT 10\.16\.0\.72, this machine has TensorRT {other}"):
            check_engine_tensorrt(engine, other)


def test_engine_sidecar_gpu_must_match_compute_capability() -> None:
    engine = _engine({"gpu": "NVIDIA L4", "compute_capability": "8.9"})
    assert check_engine_gpu(engine, ("NVIDIA L4", "8.9")) is None
    warning = check_engine_gpu(engine, ("NVIDIA GeForce RTX 4090", "8.9"))
    assert warning is not None and "NVIDIA L4" in warning and "RTX 4090" in warning
    with pytest.raises(SpgimError, match=r"built on NVIDIA L4 \(compute capability 8\.9\), this GPU is H100 \(comp"):
        check_engine_gpu(engine, ("H100", "9.0"))
    with pytest.raises(SpgimError, match="no CUDA GPU is visible"):
        check_engine_gpu(engine, None)


def test_the_plugin_library_is_never_taken_from_an_export_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--plugin``, else ``$SPGIM_TST_PLUGIN``, else spgim's own build/native: never the model folder, a path a
    sidecar names, or the working directory's build/native (loading the library runs its code)."""
    monkeypatch.delenv("SPGIM_TST_PLUGIN", raising=False)
    monkeypatch.chdir(tmp_path)
    planted = [tmp_path / "model" / PLUGIN_LIBRARY, tmp_path / "build" / "native" / PLUGIN_LIBRARY]
    for path in planted:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    own = ROOT / "build" / "native" / PLUGIN_LIBRARY
    if own.is_file():
        assert find_plugin_library() == own
    else:
        with pytest.raises(SpgimError, match=r"not found .* cmake -S \. -B build/native"):
            find_plugin_library()
    chosen = tmp_path / "chosen.so"
    chosen.write_bytes(b"")
    monkeypatch.setenv("SPGIM_TST_PLUGIN", str(chosen))
    assert find_plugin_library() == chosen
    assert find_plugin_library(planted[0]) == planted[0]  # a path the user passes may be anywhere
    with pytest.raises(SpgimError, match="does not exist"):
        find_plugin_library(tmp_path / "missing.so")
    with pytest.raises(SpgimError, match="cannot load plugin library"):
        load_plugin_library(chosen)  # an empty file is no shared library


@pytest.mark.parametrize("backend", ["onnxruntime-cuda", "onnxruntime-trt"])
def test_onnxruntime_gpu_backends_are_refused_without_their_provider(exported: tuple, backend: str) -> None:
    if unavailable_reason(backend) is None:
        not_this_machine(f"{backend} can run here")
    message = rf"^{backend} needs onnxruntime-gpu and a CUDA GPU; available providers: .*CPUExecutionProvider"
    with pytest.raises(SpgimError, match=message):
        Matter(exported[0], backend=backend)


def test_torchscript_cuda_is_refused_without_cuda(exported: tuple) -> None:
    if torch.cuda.is_available():
        not_this_machine("CUDA is available here")
    with pytest.raises(SpgimError, match="torchscript-cuda needs a CUDA GPU"):
        Matter(exported[0], backend="torchscript-cuda")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_io_binding_path_equals_plain_sessions(exported: tuple, precision: str) -> None:
    spd, spgm = select_pair(load_artifacts(exported[0]), "onnx", precision)
    bound = OnnxRuntimeGpuBackend(spd, spgm, provider="cpu")  # same binding code as on CUDA, CPU memory
    image = np.random.default_rng(2).random((3, 3, 128, 96), dtype=np.float32)
    np.testing.assert_allclose(bound.infer(image), OnnxRuntimeBackend(spd, spgm).infer(image), atol=1e-6)
    # The branches one at a time (keyframed SPD), on tensors, with a float32 mask in place of SPD's.
    tensor = torch.from_numpy(image)
    features = bound.run_spd(tensor)
    assert [tuple(f.shape) for f in features] == [(3, 1, 32, 24), (3, 16, 32, 24), (3, 32, 16, 12), (3, 64, 8, 6)]
    np.testing.assert_allclose(bound.run_spgm(tensor, features).numpy(), bound.infer(image), atol=1e-6)
    mask = torch.rand(3, 1, 32, 24)
    plain = OnnxRuntimeBackend(spd, spgm)
    expected = plain.run_spgm(image, (mask.numpy(), *plain.run_spd(image)[1:]))
    np.testing.assert_allclose(bound.run_spgm(tensor, (mask, *features[1:])).numpy(), expected, atol=1e-6)


def _smooth_frames(count: int, height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = [
        np.stack([np.sin(x / (9 + i)) + np.cos(y / 13), np.cos((x + y) / 17), np.sin(x * y / 3000.0 + i)], axis=-1)
        for i in range(count)
    ]
    return np.clip(np.stack(frames) * 64 + 128, 0, 255).astype(np.uint8)


def test_device_pre_and_post_processing_match_the_cpu_path(exported: tuple) -> None:
    frames = _smooth_frames(2, 90, 150)
    image = frames_to_image(frames, 64, 128, "cpu").numpy()
    resized = np.stack([cv2.resize(f, (128, 64), interpolation=cv2.INTER_AREA) for f in frames])
    assert np.abs(image - resized.transpose(0, 3, 1, 2) / 255.0).mean() < 1e-2
    alpha = np.random.default_rng(3).random((2, 1, 64, 128), dtype=np.float32)
    back = alpha_to_frames(torch.from_numpy(alpha), 90, 150).numpy()
    expected = np.stack([cv2.resize(a[0], (150, 90), interpolation=cv2.INTER_LINEAR) for a in alpha])
    np.testing.assert_allclose(back, expected, atol=1e-5)
    # The whole device pipeline on torch's CPU device, against Matter's numpy/cv2 path.
    spd, spgm = select_pair(load_artifacts(exported[0]), "torchscript", "fp32")
    on_device = matte_on_device(TorchScriptBackend(spd, spgm), frames, 64, 128).numpy()
    on_host = Matter(exported[0], backend="torchscript", work_size=128)(frames)
    assert on_device.shape == on_host.shape == (2, 90, 150)
    # Relative to the alpha's own spread: the tiny untrained model's alpha varies little.
    assert np.abs(on_device - on_host).mean() < 0.1 * on_host.std()


def test_bench_all_runs_only_what_this_machine_can(exported: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    usable = usable_backends(exported[0])
    assert {"onnxruntime", "onnxruntime-twin", "torchscript"} <= set(usable)
    assert "tensorrt" not in usable  # this folder has no engines
    for name in GPU_BACKENDS:
        assert (name in usable) == (unavailable_reason(name) is None and BACKENDS[name].formats != ("engine",))
    asked: list[list[str]] = []

    def fake_run_bench(model_dir: Path, *, backends: list[str], **_: Any) -> dict[str, Any]:
        asked.append(backends)
        return {"rows": [], "reduced_vs_full": []}

    monkeypatch.setattr(bench, "run_bench", fake_run_bench)
    assert main(["bench", "--model", str(exported[0]), "--backend", "all"]) == 0
    assert asked == [usable]


def _model_only(matter: Matter, spd: torch.nn.Module, spgm: torch.nn.Module) -> np.ndarray:
    image = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = spgm(image, *spd(image)).numpy()
    return np.abs(matter.backend.infer(image.numpy()) - expected)


def _check_on_gpu(matter: Matter, folder: Path, spd: Any, spgm: Any, precision: str, tolerance: float) -> None:
    assert matter.device.startswith("cuda")
    error = _model_only(matter, spd, spgm)
    print(f"{matter.backend_name}: model-only max {error.max():.2e} mean {error.mean():.2e}")
    assert (error.max() if precision == "fp32" else error.mean()) < tolerance
    frames = _frames()
    alpha = matter(frames)
    assert alpha.shape == (2, 90, 150) and alpha.dtype == np.float32
    on_cpu = Matter(folder, backend="onnxruntime", work_size=128)(frames)
    assert np.abs(alpha - on_cpu).mean() < tolerance  # other resize kernels on the device, and the precision
    on_device = matter.alpha_on_device(frames)
    assert on_device.device.type == "cuda" and tuple(on_device.shape) == (2, 90, 150)
    three = np.random.default_rng(5).integers(0, 256, size=(3, 160, 160, 3), dtype=np.uint8)
    np.testing.assert_allclose(matter(three), np.stack([matter(f) for f in three]), atol=1e-3)


@pytest.mark.parametrize(
    ("backend", "precision", "tolerance"),
    [
        # TF32 is torch's default for cuDNN convolutions, hence fp32's looser bound on a GPU.
        pytest.param("torchscript-cuda", "fp32", 5e-3, marks=needs("torchscript-cuda")),
        pytest.param("torchscript-cuda", "fp16", 1e-2, marks=needs("torchscript-cuda")),
        pytest.param("torchscript-cuda", "bf16", 5e-2, marks=needs("torchscript-cuda")),
        pytest.param("onnxruntime-cuda", "fp32", 1e-3, marks=needs("onnxruntime-cuda")),
        pytest.param("onnxruntime-cuda", "fp16", 1e-2, marks=needs("onnxruntime-cuda")),
        pytest.param("onnxruntime-trt", "fp32", 1e-3, marks=needs("onnxruntime-trt")),
        pytest.param("onnxruntime-trt", "fp16", 1e-2, marks=needs("onnxruntime-trt")),
    ],
)
def test_gpu_backends_match_eager(exported: tuple, backend: str, precision: str, tolerance: float) -> None:
    folder, spd, spgm = exported
    matter = Matter(folder, backend=backend, precision=precision, work_size=128)
    _check_on_gpu(matter, folder, spd, spgm, precision, tolerance)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    reason = unavailable_reason("tensorrt")
    if reason is not None:
        not_this_machine(reason)
    try:
        find_plugin_library()
    except SpgimError as error:
        not_this_machine(str(error))  # the plugin builds only against TensorRT's headers and libraries
    return _export(tmp_path_factory.mktemp("engines"), seed=0, formats="onnx,onnx-trt,engine")


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-3), ("fp16", 1e-2)])
def test_tensorrt_engines_match_eager(engines: tuple, precision: str, tolerance: float) -> None:
    folder, spd, spgm = engines
    matter = Matter(folder, backend="tensorrt", precision=precision, work_size=128)
    assert matter.backend_name == f"tensorrt ({precision})"
    _check_on_gpu(matter, folder, spd, spgm, precision, tolerance)
    assert Matter(folder, precision=precision, work_size=128).backend_name.startswith("tensorrt")
