"""Export: TorchScript and both ONNX flavours match PyTorch eager; sidecars; refusals; no-TensorRT path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from model_pairs import random_pair
from requirements import not_this_machine

from spgim.cli import main
from spgim.train.checkpoint import save_checkpoint
from spgim.train.config import get_config
from spgim.train.models import build_model
from spgim.tst_op import ONNX_DOMAIN, PLUGIN_NAME, PLUGIN_VERSION

BIN = Path(sys.executable).parent
SIZES = [(96, 128), (160, 64)]


def _pair(tmp: Path, config_name: str) -> tuple[Path, Path, torch.nn.Module, torch.nn.Module]:
    spd, spgm = random_pair(tmp, config_name)
    return tmp / "spd.pt", tmp / "spgm.pt", spd, spgm


@pytest.fixture(scope="module", params=["tiny", "paper"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp(f"export_{request.param}")
    spd_path, spgm_path, spd, spgm = _pair(tmp, request.param)
    out = tmp / "out"
    code = main(
        [
            "export",
            "--spd",
            str(spd_path),
            "--spgm",
            str(spgm_path),
            "--out",
            str(out),
            "--formats",
            "torchscript,onnx,onnx-trt",
            "--precision",
            "fp32,fp16",
            "--height",
            "128",
            "--width",
            "128",
            "--dynamic",
        ]
    )
    assert code == 0
    return {"out": out, "spd": spd, "spgm": spgm, "config": request.param}


def _eager(spd: torch.nn.Module, spgm: torch.nn.Module, image: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
    with torch.no_grad():
        features = spd(image)
        alpha = spgm(image, *features)
    return [f.numpy() for f in features], alpha.numpy()


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_torchscript_and_portable_onnx_match_eager(exported: dict, height: int, width: int) -> None:
    out = exported["out"]
    image = torch.rand(1, 3, height, width)
    features, alpha = _eager(exported["spd"], exported["spgm"], image)
    code = (
        "import sys, torch\n"
        "assert not any(m.startswith('spgim') for m in sys.modules)\n"
        f"spd = torch.jit.load({str(out / 'spd.torchscript.pt')!r})\n"
        f"spgm = torch.jit.load({str(out / 'spgm.torchscript.pt')!r})\n"
        f"image = torch.load({str(out / 'image.pt')!r})\n"
        "with torch.no_grad(): torch.save(spgm(image, *spd(image)), sys.argv[1])\n"
    )
    torch.save(image, out / "image.pt")
    # In a process where spgim cannot be imported at all.
    subprocess.run([sys.executable, "-I", "-c", code, str(out / "ts_alpha.pt")], check=True, timeout=300, cwd="/")
    scripted = torch.load(out / "ts_alpha.pt").numpy()
    assert np.abs(scripted - alpha).max() < 1e-4
    spd_session = ort.InferenceSession(str(out / "spd.onnx"), providers=["CPUExecutionProvider"])
    spgm_session = ort.InferenceSession(str(out / "spgm.onnx"), providers=["CPUExecutionProvider"])
    onnx_features = spd_session.run(None, {"image": image.numpy()})
    for ours, theirs in zip(onnx_features, features, strict=True):
        assert np.abs(ours - theirs).max() < 1e-4
    onnx_alpha = spgm_session.run(
        None, dict(zip(["image", "mask", "r2", "r3", "r4"], [image.numpy(), *onnx_features], strict=True))
    )[0]
    print(
        f"{exported['config']} {width}x{height}: TorchScript max {np.abs(scripted - alpha).max():.2e}, "
        f"ONNX fp32 max {np.abs(onnx_alpha - alpha).max():.2e}"
    )
    assert np.abs(onnx_alpha - alpha).max() < 1e-4


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_fp16_onnx_is_close_and_finite_with_fp16_io(exported: dict, height: int, width: int) -> None:
    out = exported["out"]
    image = torch.rand(1, 3, height, width)
    _, alpha = _eager(exported["spd"], exported["spgm"], image)
    spd_session = ort.InferenceSession(str(out / "spd.fp16.onnx"), providers=["CPUExecutionProvider"])
    spgm_session = ort.InferenceSession(str(out / "spgm.fp16.onnx"), providers=["CPUExecutionProvider"])
    assert [i.type for i in spgm_session.get_inputs()] == ["tensor(float16)"] * 5
    assert [o.type for o in spgm_session.get_outputs()] == ["tensor(float16)"]
    features = spd_session.run(None, {"image": image.numpy().astype(np.float16)})
    half = spgm_session.run(
        None, dict(zip(["image", "mask", "r2", "r3", "r4"], [image.numpy().astype(np.float16), *features], strict=True))
    )[0]
    assert half.dtype == np.float16 and np.isfinite(half).all()
    error = np.abs(half.astype(np.float32) - alpha)
    print(f"{exported['config']} {width}x{height}: ONNX fp16 mean {error.mean():.2e} max {error.max():.2e}")
    assert error.mean() < 1e-2
    sidecar = json.loads((out / "spgm.fp16.onnx.json").read_text())
    assert {i["dtype"] for i in sidecar["inputs"]} == {"float16"}


def test_tensorrt_flavour_has_one_plugin_node_per_attention(exported: dict) -> None:
    graph = onnx.load(str(exported["out"] / "spgm.trt.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    nodes = [n for n in graph.graph.node if n.op_type == PLUGIN_NAME]
    assert len(nodes) == len(get_config(exported["config"])["spgm"]["tst_stages"])
    for node in nodes:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == ONNX_DOMAIN and attributes["plugin_version"] == PLUGIN_VERSION.encode()
        assert set(attributes) == {"scale", "plugin_version"} and attributes["scale"] > 0
    portable = onnx.load(str(exported["out"] / "spgm.onnx"))
    assert not [n for n in portable.graph.node if n.op_type == PLUGIN_NAME]
    # The default portable form: one com.microsoft MultiHeadAttention per attention, no Softmax over N x M.
    attention = [n for n in portable.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(attention) == len(nodes) and {n.domain for n in attention} == {"com.microsoft"}


def test_sidecars_describe_every_artifact(exported: dict) -> None:
    out = exported["out"]
    manifest = json.loads((out / "spgim-export.json").read_text())
    # 2 TorchScript, 4 portable ONNX, 2 TensorRT-flavour SPGM; and the fp32 upsample graph's TorchScript and
    # ONNX (tests/test_upsample.py checks those).
    assert len(manifest["artifacts"]) == 10
    for item in manifest["artifacts"]:
        sidecar = json.loads((out / (item["file"] + ".json")).read_text())
        assert sidecar["sidecar"] == "spgim-artifact" and sidecar["branch"] == item["branch"]
        assert sidecar["format"] == item["format"] and sidecar["precision"] == item["precision"]
        assert sidecar["artifact_bytes"] == (out / item["file"]).stat().st_size
        if item["branch"] == "upsample":
            assert item["precision"] == "fp32" and item["format"] in ("torchscript", "onnx")
            continue
        assert sidecar["flops_per_frame"] > 0 and len(sidecar["source"]["spd_checkpoint"]["sha256"]) == 64
        # Half to double of 128x128, widened to the configuration's longest working side (tiny 320, paper 512).
        largest = {"tiny": 320, "paper": 512}[exported["config"]]
        assert sidecar["profile"] == {"min": [64, 64], "opt": [128, 128], "max": [largest, largest]}
        names = [i["name"] for i in sidecar["inputs"]]
        assert names == (["image"] if item["branch"] == "spd" else ["image", "mask", "r2", "r3", "r4"])
        if item["format"] == "onnx-trt":
            assert sidecar["plugin"]["name"] == PLUGIN_NAME and sidecar["opset"] == 17
        else:
            assert "plugin" not in sidecar


def _spgim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "spgim"), *args], capture_output=True, text=True, timeout=600, check=False)


def test_engine_without_tensorrt_or_gpu_says_so_and_exits_2_after_other_formats(tmp_path: Path) -> None:
    import importlib.util

    import torch

    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    if has_tensorrt and torch.cuda.is_available():
        not_this_machine("TensorRT and a GPU are both here: the engine builds, there is no refusal to exercise")
    spd_path, spgm_path, _, _ = _pair(tmp_path, "tiny")
    result = _spgim(
        "export",
        "--spd",
        str(spd_path),
        "--spgm",
        str(spgm_path),
        "--out",
        str(tmp_path / "out"),
        "--formats",
        "onnx,engine",
        "--precision",
        "fp32",
        "--height",
        "64",
        "--width",
        "64",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    expected = "no CUDA GPU is visible" if has_tensorrt else "TensorRT is not installed"
    assert len(lines) == 1 and expected in lines[0], lines
    assert has_tensorrt or "pip install tensorrt" in lines[0]
    assert (tmp_path / "out" / "spd.onnx").is_file() and (tmp_path / "out" / "spgm.trt.onnx").is_file()


def test_a_pair_that_does_not_belong_together_is_refused(tmp_path: Path) -> None:
    spd_path, spgm_path, _, _ = _pair(tmp_path, "tiny")
    config = get_config("tiny")
    other = save_checkpoint(tmp_path / "other_spd.pt", branch="spd", config=config, model=build_model("spd", config))
    result = _spgim("export", "--spd", str(other), "--spgm", str(spgm_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "was trained with another SPD" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = _spgim(
        "export", "--spd", str(spd_path), "--spgm", str(spgm_path), "--out", str(tmp_path / "o"), "--size", "100x64"
    )
    assert result.returncode == 1 and "multiples of 32" in result.stderr


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_tensorrt_flavour_runs_on_the_cpu_twin_like_eager(exported: dict, height: int, width: int) -> None:
    from spgim.tst_twin import twin_session

    out = exported["out"]
    image = torch.rand(1, 3, height, width)
    features, alpha = _eager(exported["spd"], exported["spgm"], image)
    names = ["image", "mask", "r2", "r3", "r4"]
    twin = twin_session(out / "spgm.trt.onnx")
    plugin_alpha = twin.run(None, dict(zip(names, [image.numpy(), *features], strict=True)))[0]
    fp32_error = np.abs(plugin_alpha - alpha).max()
    assert fp32_error < 1e-4
    spd_half = ort.InferenceSession(str(out / "spd.fp16.onnx"), providers=["CPUExecutionProvider"])
    half_image = image.numpy().astype(np.float16)
    half_features = spd_half.run(None, {"image": half_image})
    half = twin_session(out / "spgm.trt.fp16.onnx").run(
        None, dict(zip(names, [half_image, *half_features], strict=True))
    )[0]
    assert half.dtype == np.float16 and np.isfinite(half).all()
    fp16_error = np.abs(half.astype(np.float32) - alpha).mean()
    print(
        f"{exported['config']} {width}x{height}: TensorRT-flavour ONNX on the CPU twin fp32 max {fp32_error:.2e}, "
        f"fp16 mean {fp16_error:.2e}"
    )
    assert fp16_error < 1e-2
