"""Portable ONNX attention forms: each matches eager, the default never holds N x M scores, fp16, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

from spgim.cli import build_parser, main
from spgim.export.attention_nodes import DEFAULT_PORTABLE_ATTENTION, MHA_DOMAIN, MHA_OP, PORTABLE_ATTENTION
from spgim.export.commands import ATTENTION_FORMS
from spgim.export.io_spec import GraphSpec, spgm_spec
from spgim.export.onnx_graphs import convert_fp16, export_onnx
from spgim.train.checkpoint import save_checkpoint, weights_digest
from spgim.train.config import get_config
from spgim.train.models import build_model, guide_channels

SIZES = [(128, 128), (96, 160)]
EXPORT_SIZE = (128, 128)


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module, GraphSpec]:
    torch.manual_seed(0)
    config = get_config("tiny")
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    return spd, spgm, spgm_spec(guide_channels(config))


def _example(spd: torch.nn.Module, height: int, width: int) -> tuple[torch.Tensor, ...]:
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    with torch.no_grad():
        return (image, *spd(image))


def _export(models: tuple, folder: Path, form: str, *, dynamic: bool) -> Path:
    spd, spgm, spec = models
    path = folder / f"spgm.{form}.{'dynamic' if dynamic else 'fixed'}.onnx"
    if not path.is_file():
        export_onnx(
            spgm, spec, _example(spd, *EXPORT_SIZE), path, flavour="portable", opset=17, dynamic=dynamic, attention=form
        )
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attention_forms")


def _run(path: Path, inputs: tuple[torch.Tensor, ...], dtype: type = np.float32) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(None, {n: x.numpy().astype(dtype) for n, x in zip(names, inputs, strict=True)})[0])


@pytest.mark.parametrize("form", list(PORTABLE_ATTENTION))
def test_each_form_matches_eager_at_two_sizes(models: tuple, folder: Path, form: str) -> None:
    spd, spgm, _ = models
    path = _export(models, folder, form, dynamic=True)
    graph = onnx.load(str(path))
    assert any(n.op_type == MHA_OP and n.domain == MHA_DOMAIN for n in graph.graph.node) == (form == "mha")
    for height, width in SIZES:
        inputs = _example(spd, height, width)
        with torch.no_grad():
            expected = spgm(*inputs).numpy()
        error = np.abs(_run(path, inputs) - expected).max()
        print(f"{form} {width}x{height}: max {error:.2e}")
        assert error <= 1e-4


def _tensor_sizes(graph: onnx.GraphProto) -> dict[str, int | None]:
    """Elements of every typed value in ``graph`` (None where a dimension is unknown)."""
    sizes: dict[str, int | None] = {}
    for value in (*graph.value_info, *graph.output):
        shape = value.type.tensor_type.shape
        known = value.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in shape.dim)
        sizes[value.name] = math.prod(d.dim_value for d in shape.dim) if known else None
    return sizes


def test_default_form_holds_no_n_by_m_scores_but_matmul_does(models: tuple, folder: Path) -> None:
    height, width = EXPORT_SIZE
    scores = ((height // 4) * (width // 4)) ** 2  # res2: N = M = (H/4)(W/4)
    found = {}
    for form in (DEFAULT_PORTABLE_ATTENTION, "matmul"):
        graph = onnx.load(str(_export(models, folder, form, dynamic=False)))
        # ONNX Runtime's symbolic shape inference knows the com.microsoft ops that onnx's does not.
        sizes = _tensor_sizes(SymbolicShapeInference.infer_shapes(graph).graph)
        assert sizes and all(size is not None for size in sizes.values()), f"{form}: shapes left unknown"
        found[form] = sorted(name for name, size in sizes.items() if size is not None and size >= scores)
    assert found[DEFAULT_PORTABLE_ATTENTION] == []
    assert any("res2/attention" in name for name in found["matmul"])


def test_fp16_default_form_runs_in_onnxruntime_close_to_eager(models: tuple, folder: Path) -> None:
    spd, spgm, _ = models
    source = _export(models, folder, DEFAULT_PORTABLE_ATTENTION, dynamic=True)
    half = folder / "spgm.default.fp16.onnx"
    converted = convert_fp16(source, half)
    nodes = [n for n in converted.graph.node if n.op_type == MHA_OP]
    assert nodes, "the fp16 graph lost its attention nodes"
    for height, width in SIZES:
        inputs = _example(spd, height, width)
        with torch.no_grad():
            expected = spgm(*inputs).numpy()
        alpha = _run(half, inputs, np.float16)
        assert alpha.dtype == np.float16 and np.isfinite(alpha).all()
        error = np.abs(alpha.astype(np.float32) - expected).max()
        print(f"fp16 {DEFAULT_PORTABLE_ATTENTION} {width}x{height}: max {error:.2e}")
        assert error <= 1e-2


def test_fp16_blocked_form_converts_its_loop_sequences(models: tuple, folder: Path) -> None:
    spd, spgm, _ = models
    half = folder / "spgm.blocked.fp16.onnx"
    convert_fp16(_export(models, folder, "blocked", dynamic=True), half)
    inputs = _example(spd, 96, 160)
    with torch.no_grad():
        expected = spgm(*inputs).numpy()
    assert np.abs(_run(half, inputs, np.float16).astype(np.float32) - expected).max() <= 1e-2


def _pair(tmp: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    config = get_config("tiny")
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    spd_path = save_checkpoint(tmp / "spd.pt", branch="spd", config=config, model=spd)
    digest = weights_digest(spd.state_dict())
    spgm_path = save_checkpoint(tmp / "spgm.pt", branch="spgm", config=config, model=spgm, extra={"spd_digest": digest})
    return spd_path, spgm_path


def test_sidecar_records_the_form(tmp_path: Path) -> None:
    spd_path, spgm_path = _pair(tmp_path)
    for form in (None, "blocked"):
        out = tmp_path / f"out-{form}"
        command = ["export", "--spd", str(spd_path), "--spgm", str(spgm_path), "--out", str(out)]
        command += ["--formats", "onnx,onnx-trt", "--precision", "fp32,fp16", "--height", "64", "--width", "64"]
        assert main([*command, *(["--attention", form] if form else [])]) == 0
        expected = form or DEFAULT_PORTABLE_ATTENTION
        for name in ("spgm.onnx", "spgm.fp16.onnx"):
            assert json.loads((out / f"{name}.json").read_text())["attention"] == expected
        assert "attention" not in json.loads((out / "spgm.trt.onnx.json").read_text())
        ops = {n.op_type for n in onnx.load(str(out / "spgm.onnx")).graph.node}
        assert ("Loop" in ops) == (expected == "blocked") and (MHA_OP in ops) == (expected == "mha")


def test_unknown_form_is_one_line_and_nonzero_exit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = ["export", "--spd", str(tmp_path / "spd.pt"), "--spgm", str(tmp_path / "spgm.pt")]
    code = main([*command, "--out", str(tmp_path / "out"), "--attention", "nonsense"])
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "nonsense" in err and "mha" in err


def test_cli_help_describes_every_form() -> None:
    assert list(ATTENTION_FORMS) == list(PORTABLE_ATTENTION)
    parser = build_parser()
    export = next(a for a in parser._actions if a.dest == "command").choices["export"]  # type: ignore[index]
    help_text = next(a for a in export._actions if a.dest == "attention").help
    assert all(f"{name}:" in help_text for name in PORTABLE_ATTENTION)
    assert f"default {DEFAULT_PORTABLE_ATTENTION}" in help_text
