"""Export's format table: what each format is written in, one-line refusals of what does not apply, ``--size``."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from model_pairs import random_pair

from spgim.cli import build_parser, main
from spgim.export.formats import BRANCHES, FORMATS, PRECISIONS, artifacts_to_write, format_table


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny configuration's random-weight spd.pt and spgm.pt."""
    folder = tmp_path_factory.mktemp("formats")
    random_pair(folder, "tiny")
    return folder


def _export(pair: Path, out: Path, *options: str) -> list[str]:
    """``spgim export`` of ``pair`` to ``out`` with ``options``."""
    return ["export", "--spd", str(pair / "spd.pt"), "--spgm", str(pair / "spgm.pt"), "--out", str(out), *options]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--formats", "openvino", "--precision", "fp16"), "openvino is written in fp32 only"),
        (("--formats", "torchscript,onnx", "--precision", "fp16"), "torchscript is written in fp32 only"),
        (("--formats", "pt2", "--precision", "fp16"), "pt2 is written in fp32/bf16 only"),
        (("--formats", "engine", "--precision", "bf16"), "engine is written in fp32/fp16 only"),
        (("--formats", "onnx,openvino", "--precision", "fp32,bf16"), "--precision bf16 applies to none of"),
        (("--formats", "torchscript,pt2", "--precision", "fp32,fp16"), "--precision fp16 applies to none of"),
        (("--formats", "torchscript", "--attention", "blocked"), "--attention changes onnx, openvino only"),
        (("--formats", "onnx-trt", "--attention", "mha"), "--attention changes onnx, openvino only"),
        (("--formats", "onnx", "--plugin", "x.so"), "--plugin changes engine only"),
        (("--formats", "onnx", "--workspace", "2"), "--workspace changes engine only"),
        (("--formats", "torchscript,pt2", "--opset", "18"), "--opset changes onnx, onnx-trt, openvino, engine only"),
        (("--formats", "onnx", "--precision", "fp8"), "--precision names unknown fp8"),
        (("--formats", "onnx,tflite"), "--formats names unknown tflite"),
        (("--min-size", "64x64"), "bound a --dynamic export"),
        (("--dynamic", "--size", "320x192", "--min-size", "352x192"), "--min-size 352x192 is larger than"),
        (("--dynamic", "--size", "320x192", "--max-size", "640x160"), "--max-size 640x160 is smaller than"),
        (("--size", "320x192", "--height", "192"), "not both"),
        (
            (
                "--height",
                "192",
            ),
            "--height and --width go together",
        ),
        (
            (
                "--size",
                "100x64",
            ),
            "multiples of 32",
        ),
        (("--height", "100", "--width", "64"), "multiples of 32"),
    ],
)
def test_what_does_not_apply_is_refused_in_one_line(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: tuple[str, ...], message: str
) -> None:
    """Precisions, options and sizes that do not fit the formats asked for: one line, non-zero, nothing written."""
    capsys.readouterr()
    assert main(_export(pair, tmp_path / "out", *options)) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    if "applies to none" in message or "written in" in message:
        # Which formats take which precisions, whatever was wrong.
        assert "precisions by format: torchscript fp32, onnx fp32/fp16" in lines[0]
    assert not (tmp_path / "out").exists() and captured.out == ""


def test_mixed_request_writes_what_it_says_with_the_tables_files_and_sidecar_fields(
    pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--formats torchscript,onnx,onnx-trt,openvino --precision fp32,fp16``: each format in the precisions it takes,
    said before it starts; files as the table names them; each sidecar's own fields (beside the fields of every
    sidecar, TorchScript's) are its format's in the table."""
    out = tmp_path / "out"
    options = ("--formats", "torchscript,onnx,onnx-trt,openvino", "--precision", "fp32,fp16", "--size", "64x64")
    capsys.readouterr()
    assert main(_export(pair, out, *options)) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "writes torchscript fp32 (spd, spgm, upsample), onnx fp32 (spd, spgm, upsample), onnx fp16 (spd, spgm), "
        "onnx-trt fp32 (spgm), onnx-trt fp16 (spgm), openvino fp32 (spd, spgm, upsample)"
    )
    listed = json.loads((out / "spgim-export.json").read_text())["artifacts"]
    written = {(a["format"], a["branch"], a["precision"]): a["file"] for a in listed}
    assert len(written) == len(listed) == 13
    common = {branch: set(json.loads((out / f"{branch}.torchscript.pt.json").read_text())) for branch in BRANCHES}
    fields: dict[str, set[str]] = {}
    for (fmt, branch, precision), file in written.items():
        assert file == FORMATS[fmt].file_name(branch, precision) and (out / file).is_file()
        fields.setdefault(fmt, set()).update(set(json.loads((out / f"{file}.json").read_text())) - common[branch])
    for fmt, found in fields.items():
        assert found == set(FORMATS[fmt].sidecar_fields), fmt


def test_an_fp16_only_export_leaves_no_unlisted_fp32_graph(pair: Path, tmp_path: Path) -> None:
    """The fp16 graph is converted from an fp32 one that is not kept when fp32 was not asked for; the upsample
    graph is fp32 whatever the precisions."""
    out = tmp_path / "out"
    assert main(_export(pair, out, "--formats", "onnx", "--precision", "fp16", "--size", "64x64")) == 0
    listed = {a["file"] for a in json.loads((out / "spgim-export.json").read_text())["artifacts"]}
    assert listed == {"spd.fp16.onnx", "spgm.fp16.onnx", "upsample.onnx"}
    assert {p.name for p in out.iterdir()} == {*listed, *(f"{name}.json" for name in listed), "spgim-export.json"}


def test_size_is_the_same_as_height_and_width(pair: Path, tmp_path: Path) -> None:
    """``--size 128x96`` and ``--height 96 --width 128`` write the same graph sizes and sidecar sizes."""
    sidecars = []
    for name, options in (("size", ("--size", "128x96")), ("alias", ("--height", "96", "--width", "128"))):
        out = tmp_path / name
        assert main(_export(pair, out, "--formats", "onnx", "--precision", "fp32", *options)) == 0
        graph = onnx.load(str(out / "spgm.onnx"))
        image = next(value for value in graph.graph.input if value.name == "image")
        assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [1, 3, 96, 128]
        sidecars.append(json.loads((out / "spgm.onnx.json").read_text()))
    for key in ("export_size", "profile", "inputs", "outputs", "flops_per_frame"):
        assert sidecars[0][key] == sidecars[1][key], key
    assert sidecars[0]["export_size"] == [128, 96]


def test_what_each_format_is_made_from_is_written_first() -> None:
    """An engine needs its ONNX graphs; ``onnx-trt`` alone still writes SPD's portable graph it is read with."""
    assert artifacts_to_write({"onnx-trt": ("fp16",)}) == [
        ("onnx", "upsample", "fp32"),
        ("onnx", "spd", "fp16"),
        ("onnx-trt", "spgm", "fp16"),
    ]
    assert artifacts_to_write({"engine": ("fp16",), "pt2": ("bf16",)}) == [
        ("onnx", "upsample", "fp32"),
        ("onnx", "spd", "fp16"),
        ("onnx-trt", "spgm", "fp16"),
        ("pt2", "upsample", "fp32"),
        ("pt2", "spd", "bf16"),
        ("pt2", "spgm", "bf16"),
        ("engine", "upsample", "fp32"),
        ("engine", "spd", "fp16"),
        ("engine", "spgm", "fp16"),
    ]
    order = list(FORMATS)
    for name, record in FORMATS.items():
        # The upsample graph is written in fp32 for every format; sources come earlier in the table.
        assert "fp32" in record.files and set(record.default_precisions) <= set(record.precisions) <= set(PRECISIONS)
        assert all(order.index(source) < order.index(name) for source in record.sources.values())


def test_help_shows_the_table_and_every_option_it_names_exists() -> None:
    parser = build_parser()
    export = next(a for a in parser._actions if a.dest == "command").choices["export"]  # type: ignore[index]
    flags = {flag for action in export._actions for flag in action.option_strings}
    assert all(set(record.options) <= flags for record in FORMATS.values())
    help_text = export.format_help()
    for name, record in FORMATS.items():
        row = next(line for line in help_text.splitlines() if line.startswith(f"| `{name}` |"))
        assert ", ".join(record.precisions) in row and record.files["fp32"].removeprefix("{branch}") in row
    assert format_table().count("\n") == len(FORMATS) + 1
