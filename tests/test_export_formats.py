"""Export's format table and size profile: what each format is written in, one-line refusals of what does not
apply, ``--size``, and a default ``--dynamic`` export that runs at its own configuration's stream defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_pairs import export_pair, random_pair

from spgim.cli import build_parser, main
from spgim.export.formats import BRANCHES, FORMATS, PRECISIONS, artifacts_to_write, format_table
from spgim.export.profile import default_export_size, default_profiles_table, size_profile, stream_note
from spgim.runtime.matting import Matter, working_size
from spgim.train.config import MODEL_CONFIGS, get_config, stream_defaults

# Frames at 16:9, 4:3 and 9:16 (height, width), each at least as large as every configuration's working size.
ASPECT_FRAMES = {"16:9": (360, 640), "4:3": (480, 640), "9:16": (640, 360)}
# Frame sizes cameras, phones and files commonly have, (height, width).
COMMON_FRAME_SIZES = [(2160, 3840), (1080, 1920), (720, 1280), (360, 640), (1080, 1440), (480, 640), (1080, 1080)]
COMMON_FRAME_SIZES += [(1440, 1080), (1920, 1080), (1280, 720), (640, 360)]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny configuration's random-weight spd.pt and spgm.pt."""
    folder = tmp_path_factory.mktemp("formats")
    random_pair(folder, "tiny")
    return folder


def _export(pair: Path, out: Path, *options: str) -> list[str]:
    """``spgim export`` of ``pair`` to ``out`` with ``options``."""
    return ["export", "--spd", str(pair / "spd.pt"), "--spgm", str(pair / "spgm.pt"), "--out", str(out), *options]


# The paper configuration's export and three 512-pixel runs take ~15 s on two cores.
@pytest.mark.parametrize("config_name", [pytest.param("paper", marks=pytest.mark.slow), "tiny", "live"])
def test_default_dynamic_export_runs_at_its_stream_defaults(config_name: str, tmp_path: Path) -> None:
    """``spgim export --dynamic`` with no size: the export mattes 16:9, 4:3 and 9:16 frames at its own working size."""
    random_pair(tmp_path, config_name)
    out = export_pair(tmp_path, tmp_path / "model", "--formats", "onnx", "--precision", "fp32", "--dynamic")
    matter = Matter(out, backend="onnxruntime", precision="fp32")
    assert matter.work_size == stream_defaults(get_config(config_name)).work_size
    for height, width in ASPECT_FRAMES.values():
        alpha = matter(np.full((height, width, 3), 128, np.uint8))
        assert alpha.shape == (height, width) and np.isfinite(alpha).all()


@pytest.mark.parametrize("config_name", list(MODEL_CONFIGS))
def test_default_profile_holds_the_working_size_of_common_frames(config_name: str) -> None:
    """The runtime's working size of each common frame at the configuration's work size lies in the default
    ``--dynamic`` profile; without ``--dynamic`` the export size is a 16:9 frame's working size."""
    work = stream_defaults(get_config(config_name)).work_size
    profile = size_profile(work, dynamic=True)
    for height, width in COMMON_FRAME_SIZES:
        assert profile.accepts(working_size(height, width, work)), (config_name, width, height, profile)
    for side in (*profile.min_hw, *profile.opt_hw, *profile.max_hw):
        assert side % 32 == 0 and side >= 32
    fixed = size_profile(work)
    assert fixed.min_hw == fixed.opt_hw == fixed.max_hw == working_size(1080, 1920, work) == default_export_size(work)
    # A larger --size keeps half to double of it where that is wider, and still holds the stream's sizes.
    large = size_profile(work, size=(1024, 1024), dynamic=True)
    assert large.max_hw == (2048, 2048)
    assert all(large.accepts(working_size(h, w, work)) for h, w in COMMON_FRAME_SIZES)


def test_the_profile_says_which_stream_sizes_it_leaves_out() -> None:
    """The line the export prints about its sizes, and the docs' table of each configuration's defaults."""
    held = stream_note(size_profile(320, dynamic=True), 320)
    assert held.startswith("working sizes 160x96..640x384, traced at 320x192: holds") and "192x320 (9:16)" in held
    narrow = stream_note(size_profile(320, size=(128, 128), dynamic=True, max_size=(256, 256)), 320)
    assert "leaves out the stream defaults' working size for 16:9, 4:3, 1:1, 3:4, 9:16" in narrow
    assert "wider --min-size/--max-size" in narrow
    assert "192x320 only: leaves out" in stream_note(size_profile(320, size=(320, 192)), 320)
    rows = default_profiles_table().splitlines()
    assert len(rows) == 2 + len(MODEL_CONFIGS)
    assert "| tiny | 320 | 320x192 | 160x96..640x384 | 320x192 / 320x256 / 320x320 / 256x320 / 192x320 |" in rows
    assert "| paper | 512 | 512x288 | 256x128..1024x576 |" in rows[2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--formats", "openvino", "--precision", "fp16"), "openvino is written in fp32/int8 only"),
        (("--formats", "torchscript,onnx", "--precision", "fp16"), "torchscript is written in fp32 only"),
        (("--formats", "pt2", "--precision", "fp16"), "pt2 is written in fp32/bf16 only"),
        (("--formats", "engine", "--precision", "bf16"), "engine is written in fp32/fp16/int8 only"),
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
        (("--height", "192"), "--height and --width go together"),
        (("--size", "100x64"), "multiples of 32"),
        (("--formats", "onnx", "--opset", "x"), "--opset must be a whole number, got 'x'"),
        (("--formats", "engine", "--workspace", "1e"), "--workspace must be a number, got '1e'"),
        (("--upsample-radius", "1.5"), "--upsample-radius must be a whole number"),
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
        # An int8 file's quantization and gate (the int8 entry) are recorded on int8 files only; none was asked for.
        assert found == set(FORMATS[fmt].sidecar_fields) - {"int8"}, fmt


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
