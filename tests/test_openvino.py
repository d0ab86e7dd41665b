"""OpenVINO: the ONNX pair and its IR give PyTorch eager's alpha; bf16 only where the CPU has it natively."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from requirements import not_this_machine
from test_runtime import _export

from spgim.errors import SpgimError
from spgim.export.openvino_ir import export_openvino_ir
from spgim.runtime.artifacts import Artifact, load_artifacts, select_pair
from spgim.runtime.matting import Matter
from spgim.runtime.openvino_backend import OpenVINOBackend, openvino_unavailable, resnet50_openvino

Pair = tuple[Artifact, Artifact]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Pair], torch.nn.Module, torch.nn.Module]:
    """A random-weight tiny pair as portable ONNX (dynamic, up to 256x256), as OpenVINO IR, and fixed-shape ONNX."""
    tmp = tmp_path_factory.mktemp("openvino")
    (tmp / "fixed").mkdir()
    out, spd, spgm = _export(tmp, seed=0, formats="onnx,openvino")
    fixed = _export(tmp / "fixed", seed=0, dynamic=False, formats="onnx")[0]  # batch 1 and 128x128 only
    pairs = {"onnx": select_pair(load_artifacts(out), "onnx", "fp32")}
    pairs["ir"] = select_pair(load_artifacts(out), "openvino", "fp32")
    assert all(a.path.suffix == ".xml" and a.path.with_suffix(".bin").is_file() for a in pairs["ir"])
    pairs["fixed"] = select_pair(load_artifacts(fixed), "onnx", "fp32")
    return pairs, spd, spgm


@pytest.fixture(scope="module")
def backends(exported: tuple) -> dict[str, OpenVINOBackend]:
    """Each fp32 pair compiled once (compiling takes longer than running the tiny model)."""
    return {fmt: OpenVINOBackend(*pair, precision="fp32", threads=2) for fmt, pair in exported[0].items()}


def _image(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, height, width), dtype=np.float32)


def _eager(spd: torch.nn.Module, spgm: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image)
    with torch.no_grad():
        return spgm(x, *spd(x)).numpy()


@pytest.mark.parametrize("size", [(128, 128), (96, 160)], ids=["128x128", "96x160"])
@pytest.mark.parametrize("fmt", ["onnx", "ir"])
def test_fp32_matches_eager(exported: tuple, backends: dict, fmt: str, size: tuple[int, int]) -> None:
    _, spd, spgm = exported
    backend = backends[fmt]
    assert backend.name == f"openvino ({fmt}, fp32)" and backend.device == "cpu"
    image = _image(1, *size)
    alpha = backend.infer(image)
    assert alpha.shape == (1, 1, *size) and alpha.dtype == np.float32
    assert np.abs(alpha - _eager(spd, spgm, image)).max() < 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "ir"])
def test_bf16_is_close_where_the_cpu_has_native_bf16(exported: tuple, fmt: str) -> None:
    reason = openvino_unavailable("bf16")
    if reason is not None:
        with pytest.raises(SpgimError, match="native bf16"):
            OpenVINOBackend(*exported[0][fmt], precision="bf16")
        not_this_machine(reason)
    pairs, spd, spgm = exported
    backend = OpenVINOBackend(*pairs[fmt], precision="bf16")
    assert backend.name == f"openvino ({fmt}, bf16)"
    image = _image(1, 96, 160)
    error = np.abs(backend.infer(image) - _eager(spd, spgm, image))
    assert error.max() < 5e-2 and error.mean() < 5e-3


@pytest.mark.parametrize("fmt", ["onnx", "fixed"], ids=["dynamic-batch", "batch-1-graph"])
def test_a_batch_of_two_equals_two_single_calls(backends: dict, fmt: str) -> None:
    backend = backends[fmt]
    image = _image(2, 128, 128, seed=1)
    batched = backend.infer(image)
    assert batched.shape == (2, 1, 128, 128)
    np.testing.assert_allclose(batched, np.concatenate([backend.infer(image[:1]), backend.infer(image[1:])]), atol=1e-5)


def test_corrupt_files_give_one_line(exported: tuple, tmp_path: Path) -> None:
    spd, spgm = exported[0]["onnx"]
    corrupt = tmp_path / "spgm.onnx"
    corrupt.write_bytes(spgm.path.read_bytes()[:5000])
    with pytest.raises(SpgimError, match=r"OpenVINO cannot load spgm\.onnx") as raised:
        OpenVINOBackend(spd, dataclasses.replace(spgm, path=corrupt))
    assert "\n" not in str(raised.value)
    ir_spd, ir_spgm = exported[0]["ir"]
    lonely = tmp_path / "spgm.xml"
    lonely.write_bytes(ir_spgm.path.read_bytes())
    with pytest.raises(SpgimError, match=r"spgm\.bin is missing"):
        OpenVINOBackend(ir_spd, dataclasses.replace(ir_spgm, path=lonely))
    with pytest.raises(SpgimError, match="not a readable ONNX graph"):
        export_openvino_ir(tmp_path / "absent.onnx", tmp_path / "absent.xml")


def test_without_openvino_the_reason_is_the_install_hint() -> None:
    code = (
        "import sys; sys.modules['openvino'] = None\n"
        "from spgim.runtime.openvino_backend import openvino_unavailable\n"
        "print(openvino_unavailable('fp32')); print(openvino_unavailable('bf16'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    hint = "openvino is not installed: pip install openvino==2026.4.1"
    assert result.stdout.splitlines() == [hint, hint]


def test_unknown_precision_is_one_line() -> None:
    assert openvino_unavailable("fp16") == "openvino runs fp32, bf16 or int8, not fp16"


def test_resnet50_ceiling_runner_gives_logits(tmp_path: Path) -> None:
    image = torch.rand(1, 3, 64, 64)
    path = tmp_path / "resnet50.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        model = torchvision.models.resnet50().eval()
        torch.onnx.export(model, (image,), str(path), dynamo=False, opset_version=17, input_names=["image"])
        expected = model(image).numpy()
    run = resnet50_openvino(path, image.numpy(), precision="fp32", threads=2)
    logits = run()
    assert logits.shape == (1, 1000)
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=1e-3)


def test_export_writes_ir_that_matter_prefers_and_checks(exported: tuple, tmp_path: Path) -> None:
    folder = exported[0]["ir"][0].path.parent
    matter = Matter(folder, backend="openvino", work_size=128)
    assert matter.backend_name == "openvino (ir, fp32)"
    frames = np.random.default_rng(5).integers(0, 256, size=(2, 96, 160, 3), dtype=np.uint8)
    on_onnx = Matter(folder, backend="onnxruntime", work_size=128)(frames)
    np.testing.assert_allclose(matter(frames), on_onnx, atol=1e-4)
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    weights = copy / "spgm.bin"
    weights.write_bytes(weights.read_bytes()[:-4])
    with pytest.raises(SpgimError, match=r"spgm\.bin \(spgm\.xml's spgm\.bin\) is missing, truncated or replaced"):
        Matter(copy, backend="openvino")
