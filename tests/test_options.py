"""One set of typed options: the command line and the Python API give the same job, the help states what the
exports record, and a bad value is one line from one check."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spgim.cli import main
from spgim.cluster.options import BatchOutputs, ClusterOptions
from spgim.errors import SpgimError
from spgim.option_groups import OptionGroup
from spgim.stream_defaults import StreamDefaults
from spgim.streaming.options import (
    EncodeOptions,
    EngineOptions,
    MattingOptions,
    Outputs,
    PreviewAddress,
    PreviewOptions,
    SourceOptions,
)
from spgim.train.config import MODEL_CONFIGS, get_config, stream_defaults

SPGIM = str(Path(sys.executable).with_name("spgim"))
# Non-default values for every matting and engine option, the same job given twice.
MATTING_ARGV = ["--work-size", "128", "--keyframe-interval", "3", "--keyframe-ramp", "2", "--smoothing", "0.25"]
MATTING = MattingOptions(work_size=128, keyframe_interval=3, keyframe_ramp=2, smoothing=0.25, upsampling="bilinear")
ENGINE_ARGV = ["--backend", "onnxruntime", "--precision", "fp32", "--threads", "1", "--batch", "2"]
ENGINE = EngineOptions(backend="onnxruntime", precision="fp32", threads=1, batch=2)
# Bench reports timings beside what ran; only what ran must agree.
TIMINGS = {"model_fps", "end_to_end_fps", "ratio", "wall_s"}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated clip (objects over a photo, 12 frames of 160x96) and its true alpha, ``c.mp4`` and ``a.mkv``."""
    folder = tmp_path_factory.mktemp("options-clip")
    argv = ["data", "clip", "--out", str(folder / "c.mp4"), "--alpha", str(folder / "a.mkv")]
    assert main([*argv, "--frames", "12", "--size", "160x96"]) == 0
    return folder


def _parsed(group: type[OptionGroup], argv: list[str]) -> Any:
    parser = argparse.ArgumentParser()
    group.add_arguments(parser)
    return group.from_args(parser.parse_args(argv))


# Each group's every flag, and the dataclass they make.
EVERY_FLAG: list[tuple[type[OptionGroup], str, Any]] = [
    (
        Outputs,
        "--output a.mp4 --output rtmp://h/k --alpha m --foreground f.mov --background x",
        Outputs(composite=("a.mp4", "rtmp://h/k"), alpha="m", foreground="f.mov", background="x"),
    ),
    (EngineOptions, " ".join(ENGINE_ARGV), ENGINE),
    (EngineOptions, "--server 127.0.0.1:8001", EngineOptions(server="127.0.0.1:8001")),
    (MattingOptions, " ".join([*MATTING_ARGV, "--upsample", "bilinear"]), MATTING),
    (
        SourceOptions,
        "--live --start 1:30 --duration 2.5 --reconnects 2 --stall-timeout 4 --startup-timeout 9 --rtsp-transport tcp",
        SourceOptions(True, 90.0, 2.5, reconnects=2, stall_timeout=4.0, startup_timeout=9.0, rtsp_transport="tcp"),
    ),
    (EncodeOptions, "--codec h265 --quality 70 --preset fast", EncodeOptions("h265", 70, "fast")),
    (PreviewOptions, "--preview 0.0.0.0:8080", PreviewOptions(PreviewAddress("0.0.0.0", 8080))),
    (PreviewOptions, "--preview 0", PreviewOptions(PreviewAddress("127.0.0.1", 0))),
    (
        BatchOutputs,
        "--composite webm --alpha png --foreground mov --background #00ff00",
        BatchOutputs(composite="webm", alpha="png", foreground="mov", background="#00ff00"),
    ),
    (
        ClusterOptions,
        "--ray 10.0.0.5:6379 --cpus-per-job 1 --retries 0 --no-resume",
        ClusterOptions(ray="10.0.0.5:6379", cpus_per_job=1, retries=0, rerun=True),
    ),
]


@pytest.mark.parametrize(("group", "argv", "expected"), EVERY_FLAG)
def test_every_flag_sets_its_field_and_no_flag_keeps_the_default(
    group: type[OptionGroup], argv: str, expected: Any
) -> None:
    assert _parsed(group, argv.split()) == expected
    if group is not Outputs:  # an Outputs with nothing to write is refused (below)
        assert _parsed(group, []) == group()


def test_matte_on_the_command_line_and_in_python_writes_the_same_alpha(model: Path, clip: Path, tmp_path: Path) -> None:
    from spgim.streaming.job import matte_video

    source = str(clip / "c.mp4")
    argv = ["matte", source, "--model", str(model), "--alpha", str(tmp_path / "cli"), "--quiet", "--duration", "0.3"]
    assert main([*argv, *ENGINE_ARGV, *MATTING_ARGV, "--upsample", "bilinear"]) == 0
    reading = SourceOptions(duration=0.3)
    api = matte_video(
        source, Outputs(alpha=tmp_path / "api"), model=model, engine=ENGINE, matting=MATTING, reading=reading
    )
    cli_frames, api_frames = sorted((tmp_path / "cli").iterdir()), sorted((tmp_path / "api").iterdir())
    assert len(cli_frames) == api.frames_out < 12  # the duration was kept to
    assert [path.read_bytes() for path in cli_frames] == [path.read_bytes() for path in api_frames]
    # The options reached the job: the export's own defaults matte these frames otherwise.
    matte_video(source, Outputs(alpha=tmp_path / "defaults"), model=model, reading=reading, progress=False)
    assert [path.read_bytes() for path in sorted((tmp_path / "defaults").iterdir())] != [
        path.read_bytes() for path in api_frames
    ]


def test_bench_video_on_the_command_line_and_in_python_runs_the_same_job(
    model: Path, clip: Path, tmp_path: Path
) -> None:
    from spgim.streaming.bench import video_bench

    argv = ["bench", "--model", str(model), "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1"]
    argv += ["--size", "64x64", "--warmup", "0", "--iters", "1", "--video", str(clip / "c.mp4"), *MATTING_ARGV]
    assert main([*argv, "--upsample", "bilinear", "--video-duration", "0.25", "--json", str(tmp_path / "b.json")]) == 0
    (cli,) = json.loads((tmp_path / "b.json").read_text())["video"]
    engine = EngineOptions(backend="onnxruntime", precision="fp32", threads=1)
    api = video_bench(model, clip / "c.mp4", engine, MATTING, warmup=0, iters=1, duration=0.25)
    ran = {key: value for key, value in api.items() if key not in TIMINGS}
    assert {key: value for key, value in cli.items() if key not in TIMINGS} == ran
    expected = {"work_size": [128, 64], "keyframe_interval": 3, "keyframe_ramp": 2, "upsampling": "bilinear"}
    assert {key: ran[key] for key in expected} == expected and 0 < ran["frames"] < 12


def test_eval_video_on_the_command_line_and_in_python_scores_the_same(
    model: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spgim.streaming.job import matte_video
    from spgim.train.video_metrics import evaluate_alpha_videos

    argv = ["eval", "--video", str(clip / "c.mp4"), "--truth", str(clip / "a.mkv"), "--model", str(model)]
    assert main([*argv, *ENGINE_ARGV, *MATTING_ARGV, "--upsample", "bilinear", "--json", str(tmp_path / "s.json")]) == 0
    matte_video(clip / "c.mp4", Outputs(alpha=tmp_path / "alpha"), model=model, engine=ENGINE, matting=MATTING)
    scores = evaluate_alpha_videos(tmp_path / "alpha", clip / "a.mkv").to_json()
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(json.dumps(scores))
    assert scores["frames"] == 12


def _help_defaults(help_text: str, option: str) -> dict[str, float]:
    """What ``--option``'s help says each configuration records: ``default: the export's: 512 for paper, ...``."""
    flat = " ".join(help_text.split())
    stated = re.search(rf"{option} [A-Z]+ .*?default: the export's: (.+?)\)", flat)
    assert stated, f"{option}'s help states no recorded defaults: {flat}"
    values: dict[str, float] = {}
    for part in re.split(r", (?=\d)", stated.group(1)):
        value, names = part.split(" for ")
        configurations = list(MODEL_CONFIGS) if names == "every configuration" else re.split(r", | and ", names)
        values.update(dict.fromkeys(configurations, float(value)))
    return values


def _reference_stream(config: str, folder: Path) -> dict[str, Any]:
    """The ``stream`` entry of SPGM's sidecar when the shipped ``config`` pair is exported."""
    from model_pairs import export_pair

    from spgim.reference import reference_checkpoint
    from spgim.runtime.artifacts import load_artifacts

    for branch in ("spd", "spgm"):
        (folder / f"{branch}.pt").symlink_to(reference_checkpoint(branch, config))
    out = export_pair(folder, folder / "model", "--formats", "onnx", "--precision", "fp32")
    (spgm,) = [artifact for artifact in load_artifacts(out) if artifact.branch == "spgm"]
    return dict(spgm.sidecar["stream"])


@pytest.mark.slow
def test_matte_help_states_what_the_configurations_and_shipped_exports_record(tmp_path: Path) -> None:
    from spgim.reference import CONFIGS

    help_text = subprocess.run([SPGIM, "matte", "--help"], capture_output=True, text=True, check=True).stdout
    options = {"work_size": "--work-size", "keyframe_interval": "--keyframe-interval"}
    options |= {"keyframe_ramp": "--keyframe-ramp", "smoothing": "--smoothing"}
    stated = {name: _help_defaults(help_text, flag) for name, flag in options.items()}
    for config in MODEL_CONFIGS:
        recorded = stream_defaults(get_config(config))
        assert {name: stated[name][config] for name in options} == {name: getattr(recorded, name) for name in options}
    for config in CONFIGS:  # what a shipped pair's export writes, read back as the runtime reads it
        (tmp_path / config).mkdir()
        exported = _reference_stream(config, tmp_path / config)
        assert set(exported) == set(StreamDefaults.record_types())  # the sidecar holds every value
        assert {name: stated[name][config] for name in options} == {name: exported[name] for name in options}


# A bad value of each kind, with its one line; the matting ones go to every command that takes them.
BAD_MATTING = [
    ("--work-size 16", "work size must be at least 32 pixels, got 16"),
    ("--work-size big", "--work-size must be a whole number, got 'big'"),
    ("--keyframe-interval -1", "keyframe interval must be 0 (every frame) or more, got -1"),
    ("--keyframe-ramp -2", "keyframe ramp must be 0 (switch at once) or more frames, got -2"),
    ("--smoothing 1.5", "smoothing must be at least 0 and below 1, got 1.5"),
]
BAD_ENGINE = [
    ("--batch 0", "batch must be at least 1, got 0"),
    ("--threads -2", "threads must be 0 (the backend's choice) or more, got -2"),
]
BAD_SOURCE = [("--start soon", "--start must be a time (seconds, M:SS or H:MM:SS), got 'soon'")]
# Checked by the runtime, before it opens the export.
BAD_UPSAMPLING = [("--upsample nope", "unknown upsampling 'nope'; choose auto, guided, guided-cv2, bilinear")]
# bench's --backend, --precision, --batch and --threads are its own (lists and the model-only rows'); eval and
# matte take the engine's.
BAD_VALUES = [
    *(("matte", *bad) for bad in BAD_MATTING + BAD_ENGINE + BAD_SOURCE + BAD_UPSAMPLING),
    (
        "matte",
        "--preview nonsense",
        "--preview must be [HOST:]PORT (a port from 0, any free one, to 65535), got 'nonsense'",
    ),
    *(("eval", *bad) for bad in BAD_MATTING + BAD_ENGINE + BAD_UPSAMPLING),
    *(("bench", *bad) for bad in BAD_MATTING),
    ("bench", "--video-duration soon", "--video-duration must be a time (seconds, M:SS or H:MM:SS), got 'soon'"),
    *(("batch", *bad) for bad in BAD_MATTING + BAD_ENGINE + BAD_SOURCE + BAD_UPSAMPLING),
    ("batch", "--alpha gif", "--alpha must be one of mp4, mkv, mov, webm, png, got 'gif'"),
    ("batch", "--composite none", "nothing to write: --composite none needs --alpha or --foreground"),
    ("batch", "--cpus-per-job 0", "--cpus-per-job must be at least 1, got 0"),
    ("batch", "--retries many", "--retries must be a whole number, got 'many'"),
]


@pytest.mark.parametrize(("command", "argv", "message"), BAD_VALUES)
def test_a_bad_option_value_is_one_line_before_any_work(
    command: str, argv: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No model folder exists: the value is refused before anything is opened.
    missing = str(tmp_path / "no-model")
    commands = {
        "matte": ["matte", "clip.mp4", "--model", missing, "--output", str(tmp_path / "o.mp4")],
        "bench": ["bench", "--model", missing, "--video", "clip.mp4"],
        "eval": ["eval", "--video", "clip.mp4", "--truth", "a.mkv", "--model", missing],
        "batch": ["batch", "clip.mp4", "--model", missing, "--out", str(tmp_path / "out")],
    }
    assert main([*commands[command], *argv.split()]) != 0
    assert capsys.readouterr().err == f"spgim {command}: error: {message}\n"


def test_a_bad_value_in_python_is_the_same_line() -> None:
    with pytest.raises(SpgimError, match=r"^work size must be at least 32 pixels, got 16$"):
        MattingOptions(work_size=16)
    with pytest.raises(SpgimError, match=r"^smoothing must be at least 0 and below 1, got 1.0$"):
        StreamDefaults(smoothing=1.0)
    with pytest.raises(SpgimError, match=r"^nothing to write: give --output, --alpha or --foreground$"):
        Outputs()
    assert Outputs(composite="a.mp4").composite == ("a.mp4",)  # one destination or several
