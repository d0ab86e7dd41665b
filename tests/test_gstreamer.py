"""``spgimmatte`` in real GStreamer pipelines, and ``spgim gst-env``.

Pipelines run as a user runs them: ``gst-launch-1.0`` (or tests/gst_pipeline.py, a small GStreamer application
under the system's ``python3``) in the environment ``spgim gst-env`` prints, on the session's tiny ONNX export. Each
GStreamer run gets a ``PATH`` without virtual environments (GStreamer's Python loader must start the system's
``python3``) and the session's own plugin registry, so that the user's cached registry neither helps nor harms.
Debian's GStreamer packages are what tests/install_servers.sh installs; without them the tests skip, in CI they
fail (:func:`requirements.unavailable`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from requirements import unavailable

from spgim.errors import SpgimError
from spgim.gstreamer.environment import (
    PACKAGES,
    find_loader,
    gst_environment,
    loader_python,
    own_registry,
    shell_lines,
    virtual_environment_python,
    without_virtual_environments,
)
from spgim.gstreamer.properties import PROPERTIES, THE_EXPORTS, ElementSettings
from spgim.option_groups import Flag
from spgim.streaming.options import EngineOptions, MattingOptions

HERE = Path(__file__).resolve().parent
SPGIM = str(Path(sys.executable).with_name("spgim"))
SYSTEM_PYTHON = "/usr/bin/python3"
ONNX = "backend=onnxruntime precision=fp32"
FRAME = re.compile(
    r'from element "spgimmatte\d*" \(element\): spgimmatte-frame, frame=\(guint64\)(\d+), keyframe=\(boolean\)(\w+)'
)


# --- the environment GStreamer runs in --------------------------------------------------------------


def _require_gstreamer() -> None:
    missing = [tool for tool in ("gst-launch-1.0", "gst-inspect-1.0", SYSTEM_PYTHON) if shutil.which(tool) is None]
    loader = find_loader(os.environ)
    if loader is None:
        missing.append("libgstpython.so")
    if missing:
        unavailable(f"GStreamer missing ({', '.join(missing)}): apt-get install {PACKAGES}")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if loader is not None and loader_python(loader) != running:
        unavailable(f"{loader} embeds Python {loader_python(loader)}, the tests run Python {running}")


@pytest.fixture(scope="session")
def gst_base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a shell about to ``eval "$(spgim gst-env)"``: no virtual environment on ``PATH``, its
    own registry file."""
    _require_gstreamer()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GST_PLUGIN_PATH", "SPGIM_"))}
    env["PATH"] = without_virtual_environments(env.get("PATH", ""))
    env["GST_REGISTRY"] = str(tmp_path_factory.mktemp("gst-registry") / "registry.bin")
    return env


@pytest.fixture(scope="session")
def gst_env(gst_base: dict[str, str]) -> dict[str, str]:
    """:func:`gst_base` with what ``spgim gst-env`` sets."""
    return {**gst_base, **gst_environment(gst_base)}


def _launch(env: dict[str, str], pipeline: str, *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``gst-launch-1.0 -m PIPELINE`` (its bus messages printed)."""
    return subprocess.run(
        ["gst-launch-1.0", "-m", *shlex.split(pipeline)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_app(env: dict[str, str], pipeline: str, *options: str) -> list[dict[str, Any]]:
    """tests/gst_pipeline.py under the system's python3: spgimmatte's messages, in order."""
    result = subprocess.run(
        [SYSTEM_PYTHON, str(HERE / "gst_pipeline.py"), pipeline, *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    messages = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert result.returncode == 0, (messages[-3:], result.stderr[-2000:])
    return messages


def _frames(output: str) -> list[tuple[int, bool]]:
    """``(frame, keyframe)`` of each spgimmatte-frame message in ``gst-launch-1.0 -m`` output."""
    return [(int(index), keyframe == "true") for index, keyframe in FRAME.findall(output)]


def _raw(path: Path, width: int, height: int, channels: int) -> np.ndarray:
    """Raw frames as GStreamer lays them out (rows padded to 4 bytes), unpadded: ``(N, H, W, C)``."""
    stride = (width * channels + 3) // 4 * 4
    rows = np.fromfile(path, np.uint8).reshape(-1, height, stride)
    return rows[:, :, : width * channels].reshape(-1, height, width, channels)


# --- properties and settings (no GStreamer needed) --------------------------------------------------


def test_engine_and_matting_properties_are_the_matte_commands_flags() -> None:
    from dataclasses import fields

    for group in (EngineOptions, MattingOptions):
        flags: dict[str, Flag] = {f.name: f.metadata["flag"] for f in fields(group) if "flag" in f.metadata}
        for prop in (p for p in PROPERTIES if p.group is group):
            assert prop.field is not None
            assert flags[prop.field].name == f"--{prop.name}"
            assert prop.blurb.startswith(flags[prop.field].help.split("{default}")[0])
    names = {prop.name for prop in PROPERTIES}
    assert {"model", "backend", "precision", "work-size", "keyframe-interval", "output", "background"} <= names
    assert "threads" in names and "batch" not in names and "server" not in names


def test_settings_take_the_exports_values_unless_set(tmp_path: Path) -> None:
    settings = ElementSettings.from_values({"model": str(tmp_path)})
    assert settings.engine == EngineOptions()
    assert settings.matting == MattingOptions()
    assert (settings.output, settings.background) == ("composite", "green")
    given = {"model": str(tmp_path), "work-size": 256, "keyframe-interval": 4, "smoothing": 0.5, "threads": 2}
    settings = ElementSettings.from_values({**given, "backend": "onnxruntime", "output": "Alpha", "background": "None"})
    assert settings.matting == MattingOptions(work_size=256, keyframe_interval=4, smoothing=0.5)
    assert settings.engine == EngineOptions(backend="onnxruntime", threads=2)
    assert (settings.output, settings.background) == ("alpha", "none")
    assert all(prop.default == THE_EXPORTS for prop in PROPERTIES if prop.name in ("work-size", "keyframe-ramp"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "model is not set"),
        ({"output": "sepia"}, "output='sepia' is not one of alpha, rgba, composite"),
        ({"background": "none"}, "output=composite needs a background"),
        ({"work-size": 16}, "bad property value (work-size=16): work size must be at least 32"),
        (
            {"smoothing": 1.0, "threads": 2},
            "bad property value (smoothing=1.0): smoothing must be at least 0 and below 1",
        ),
        ({"threads": -1}, "bad property value (threads=-1): threads must be 0"),
    ],
)
def test_bad_property_values_are_one_line(values: dict[str, Any], message: str) -> None:
    model = {} if not values else {"model": "exported"}
    with pytest.raises(SpgimError, match=re.escape(message)) as raised:
        ElementSettings.from_values({**model, **values})
    assert "\n" not in str(raised.value)


# --- spgim gst-env ----------------------------------------------------------------------------------


def test_gst_env_prepends_the_plugin_folder_and_quotes_values(tmp_path: Path) -> None:
    plugins = str(Path(__file__).resolve().parents[1] / "gstreamer" / "plugin")
    variables = gst_environment({"GST_PLUGIN_PATH": f"/opt/plugins{os.pathsep}{plugins}"})
    assert variables["GST_PLUGIN_PATH"] == f"{plugins}{os.pathsep}/opt/plugins"  # first, and only once
    assert (Path(variables["GST_PLUGIN_PATH"].split(os.pathsep)[0]) / "python" / "spgimmatte.py").is_file()
    assert "GST_PLUGIN_PATH_1_0" not in variables
    assert Path(np.__file__).resolve().is_relative_to(Path(variables["SPGIM_SITE"].split(os.pathsep)[0]))
    awkward = {"SPGIM_SITE": '/a b/it\'s $HOME `x` "q"', "GST_PLUGIN_PATH": "/p:/q"}
    script = shell_lines(awkward) + 'printf "%s\\n%s" "$SPGIM_SITE" "$GST_PLUGIN_PATH"'
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n") == [awkward["SPGIM_SITE"], awkward["GST_PLUGIN_PATH"]]


def test_gst_env_refuses_a_virtual_environment_first_on_path(tmp_path: Path) -> None:
    folder = tmp_path / "venv" / "bin"
    folder.mkdir(parents=True)
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (folder / "python3").write_text("#!/bin/sh\n")
    (folder / "python3").chmod(0o755)
    system = tmp_path / "system"
    system.mkdir()
    (system / "python3").write_text("#!/bin/sh\n")
    (system / "python3").chmod(0o755)
    assert virtual_environment_python({"PATH": f"{folder}{os.pathsep}{system}"}) == folder / "python3"
    assert virtual_environment_python({"PATH": f"{system}{os.pathsep}{folder}"}) is None
    assert without_virtual_environments(f"{folder}{os.pathsep}{system}{os.pathsep}{tmp_path / 'venv'}") == str(system)
    if find_loader(os.environ) is not None and shutil.which("gst-inspect-1.0"):
        env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"}
        result = subprocess.run([SPGIM, "gst-env"], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode != 0 and not result.stdout
        assert "deactivate" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_gst_env_without_gstreamer_names_the_packages(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no gst-inspect-1.0 here
    result = subprocess.run([SPGIM, "gst-env"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0 and not result.stdout
    assert "gst-inspect-1.0" in result.stderr and "not found: install the Debian packages" in result.stderr
    assert "gstreamer1.0-tools" in result.stderr and "gstreamer1.0-python3-plugin-loader" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_command_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, spgim.gstreamer.commands; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('numpy', 'cv2', 'gi', 'torch', 'onnxruntime')]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_eval_gst_env_then_gst_inspect_finds_the_element(gst_base: dict[str, str]) -> None:
    env = {**gst_base, "GST_PLUGIN_PATH": "/nonexistent/plugins"}
    script = f'set -e; eval "$({shlex.quote(SPGIM)} gst-env)"; echo "$GST_PLUGIN_PATH"; gst-inspect-1.0 spgimmatte'
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith(f"{os.pathsep}/nonexistent/plugins")
    assert "GstSpgimMatte" in result.stdout and "cannot load spgim" not in result.stdout + result.stderr
    for prop in PROPERTIES:
        assert re.search(rf"^\s+{re.escape(prop.name)}\s+:", result.stdout, re.MULTILINE), prop.name
    assert "GRAY8" in result.stdout and "BGRx" in result.stdout


def test_gst_env_rebuilds_its_own_registry_after_a_failed_load(gst_base: dict[str, str], tmp_path: Path) -> None:
    """A GStreamer run inside an activated virtual environment fails to load the Python loader, and the registry
    remembers; ``spgim gst-env`` deletes its own registry then, so the next run scans again."""
    venv_bin = Path(sys.executable).parent
    if not (venv_bin.parent / "pyvenv.cfg").is_file():
        pytest.skip("the tests do not run in a virtual environment: nothing to activate")
    env = {key: value for key, value in gst_base.items() if key != "GST_REGISTRY"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    variables = gst_environment(env)
    assert variables["GST_REGISTRY"] == str(own_registry(env))
    inspect = ["gst-inspect-1.0", "spgimmatte"]
    activated = {**env, **variables, "PATH": f"{venv_bin}{os.pathsep}{env['PATH']}"}
    assert subprocess.run(inspect, env=activated, capture_output=True, timeout=300, check=False).returncode != 0
    stale = subprocess.run(inspect, env={**env, **variables}, capture_output=True, timeout=300, check=False)
    assert stale.returncode != 0  # the registry remembers the failed load
    script = f'eval "$({shlex.quote(SPGIM)} gst-env)" && gst-inspect-1.0 spgimmatte'
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0 and "GstSpgimMatte" in result.stdout, result.stderr[-2000:]


# --- pipelines --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_alpha_of_a_file_equals_spgim_matte(gst_env: dict[str, str], model: Path, tmp_path: Path) -> None:
    """The element's GRAY8 alpha, muxed losslessly into Matroska, is ``spgim matte --alpha``'s PNGs, frame for frame.

    The clip is H.264 in RGB (libx264rgb): both decoders give the same pixels, where a YUV clip would differ by the
    YUV to RGB conversion (GStreamer's videoconvert and FFmpeg's swscale round differently).
    """
    from media import make_clip

    clip = make_clip(tmp_path / "clip.mp4", size=(160, 96), frames=12, fps=25, codec="libx264rgb", pix_fmt="rgb24")
    matted = tmp_path / "alpha.mkv"
    pipeline = (
        f"filesrc location={clip.path} ! decodebin ! videoconvert ! spgimmatte model={model} output=alpha {ONNX} "
        f"keyframe-interval=3 ! matroskamux ! filesink location={matted}"
    )
    result = _launch(gst_env, pipeline)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert _frames(result.stdout) == [(i, i % 3 == 0) for i in range(12)]  # no reset in a continuous stream
    folder = tmp_path / "matte-alpha"
    argv = [SPGIM, "matte", str(clip.path), "--model", str(model), "--alpha", str(folder), "--quiet"]
    argv += ["--backend", "onnxruntime", "--precision", "fp32", "--keyframe-interval", "3"]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    expected = [cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted(folder.glob("*.png"))]
    with av.open(str(matted)) as container:
        stream = container.streams.video[0]
        decoded = [(frame.time, frame.to_ndarray(format="gray")) for frame in container.decode(stream)]
    assert len(decoded) == len(expected) == len(clip.pts) == 12
    for (_, alpha), reference in zip(decoded, expected, strict=True):
        assert np.abs(alpha.astype(np.float32) / 255 - reference.astype(np.float32) / 255).max() <= 1e-5
    times = [Fraction(t).limit_denominator(1000) for t, _ in decoded]
    assert times == [Fraction(t).limit_denominator(1000) for t in clip.times]  # Matroska keeps milliseconds


def test_outputs_and_backgrounds_are_the_python_apis(gst_env: dict[str, str], model: Path, tmp_path: Path) -> None:
    """Alpha, RGBA and composites over a colour, an image (from BGRx input) and the blurred frame, at a width whose
    rows are padded, against :class:`~spgim.runtime.matting.Matter` and a blend computed here."""
    from spgim.gstreamer.stream import blurred
    from spgim.runtime.matting import Matter
    from spgim.streaming.composite import alpha_u8

    width, height = 99, 64
    picture = np.zeros((height, width, 3), np.uint8)
    picture[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None]
    picture[..., 1] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    picture[..., 2] = 40
    cv2.imwrite(str(tmp_path / "back.png"), picture[..., ::-1])
    element = f"spgimmatte model={model} {ONNX}"
    branches = {
        "alpha": f"{element} output=alpha",
        "rgba": f"{element} output=rgba",
        "colour": f"{element} output=composite background=#0000ff",
        "image": f"videoconvert ! video/x-raw,format=BGRx ! {element} output=composite background={tmp_path}/back.png",
        "blur": f"{element} output=composite background=blur",
    }
    pipeline = (
        "videotestsrc num-buffers=3 pattern=smpte horizontal-speed=7 "
        f"! video/x-raw,format=RGB,width={width},height={height},framerate=25/1 ! tee name=t "
        f"t. ! queue ! filesink location={tmp_path}/in.raw "
    )
    sinks = [f"t. ! queue ! {chain} ! filesink location={tmp_path}/{name}.raw" for name, chain in branches.items()]
    pipeline += " ".join(sinks)
    result = _launch(gst_env, pipeline)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    frames = _raw(tmp_path / "in.raw", width, height, 3)
    assert len(frames) == 3
    matter = Matter(model, backend="onnxruntime", precision="fp32")
    alphas = [matter(frame) for frame in frames]
    made = {
        name: _raw(tmp_path / f"{name}.raw", width, height, {"alpha": 1, "rgba": 4}.get(name, 3)) for name in branches
    }
    for index, (frame, alpha) in enumerate(zip(frames, alphas, strict=True)):
        assert np.array_equal(made["alpha"][index][..., 0], alpha_u8(alpha))
        assert np.array_equal(made["rgba"][index], np.dstack([frame, alpha_u8(alpha)]))
        weight = alpha[..., None].astype(np.float64)
        for name, back in (("colour", np.array([0, 0, 255])), ("image", picture), ("blur", blurred(frame))):
            expected = weight * frame + (1 - weight) * back
            assert np.abs(made[name][index].astype(np.float64) - expected).max() <= 1.0, name
    assert 0.05 < float(np.mean(alphas)) < 0.95  # the blend shows both the frame and the background


def test_a_caps_change_mid_stream_resets_the_keyframes(gst_env: dict[str, str], model: Path) -> None:
    """Two streams of one aspect, concatenated: the working size stays, so only the reset makes frame 6 a keyframe.

    The sources' pads are static, so concat plays them in the order written (decodebin's pads appear when each
    decoder is ready, and under load the second could come first)."""
    sources = [
        f"videotestsrc pattern=smpte horizontal-speed=3 num-buffers=6 ! video/x-raw,width={w},height={h},framerate=25/1"
        for w, h in ((128, 96), (256, 192))
    ]
    pipeline = (
        f"concat name=c ! videoconvert ! spgimmatte model={model} output=alpha {ONNX} keyframe-interval=4 "
        f"work-size=128 ! fakesink {sources[0]} ! c. {sources[1]} ! c."
    )
    messages = _run_app(gst_env, pipeline)
    assert messages[0]["name"] == "spgimmatte-model" and messages[0]["work-size"] == 128
    assert messages[0]["keep-freed-memory"] is True  # glibc: frame-sized blocks are kept for reuse
    resets = [m for m in messages if m["name"] == "spgimmatte-reset"]
    assert resets == [{"name": "spgimmatte-reset", "frame": 6, "reason": "caps"}]
    frames = [m for m in messages if m["name"] == "spgimmatte-frame"]
    assert [m["frame"] for m in frames] == list(range(12))
    assert [m["frame"] for m in frames if m["keyframe"]] == [0, 4, 6, 10]
    assert all(m["latency-ms"] > 0 for m in frames)


def test_a_flushing_seek_resets_the_keyframes(gst_env: dict[str, str], model: Path) -> None:
    pipeline = (
        "videotestsrc pattern=smpte horizontal-speed=3 ! video/x-raw,width=128,height=96,framerate=25/1 ! "
        f"videoconvert ! spgimmatte model={model} output=alpha {ONNX} keyframe-interval=4 ! fakesink"
    )
    messages = _run_app(gst_env, pipeline, "--frames", "16", "--seek-after", "5")
    resets = [m for m in messages if m["name"] == "spgimmatte-reset"]
    assert len(resets) == 1 and resets[0]["reason"] == "flush"
    after = resets[0]["frame"]
    frames = {m["frame"]: m for m in messages if m["name"] == "spgimmatte-frame"}
    assert 6 <= after <= 12 and frames[after]["keyframe"] and frames[after]["pts"] == 0  # back at the start
    assert [i for i, m in sorted(frames.items()) if m["keyframe"]][:2] == [0, 4]


@pytest.mark.parametrize(
    ("properties", "message"),
    [
        ("model=/nonexistent/export", "model folder /nonexistent/export does not exist"),
        ("model={model} output=sepia", "output='sepia' is not one of alpha, rgba, composite"),
        ("model={model} work-size=16", "bad property value (work-size=16): work size must be at least 32"),
    ],
)
def test_failures_at_start_are_one_line_gstreamer_errors(
    gst_env: dict[str, str], model: Path, properties: str, message: str
) -> None:
    element = f"spgimmatte {properties.format(model=model)} {ONNX}"
    pipeline = f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB ! {element} ! fakesink"
    result = _launch(gst_env, pipeline)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"ERROR: from element \S*spgimmatte0: " + re.escape(message), result.stderr), output[-3000:]
    assert "Traceback" not in output


def test_a_frame_size_outside_the_exports_range_is_one_gstreamer_error(gst_env: dict[str, str], model: Path) -> None:
    """Refused when the caps arrive, in the streaming thread; run from an application (gst-launch-1.0 can miss an
    error posted before its main loop runs, and then waits for ever)."""
    source = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=40,height=40"
    pipeline = f"{source} ! spgimmatte model={model} {ONNX} ! fakesink"
    result = subprocess.run(
        [SYSTEM_PYTHON, str(HERE / "gst_pipeline.py"), pipeline],
        env=gst_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [json.loads(line) for line in result.stdout.splitlines() if '"name": "error"' in line]
    assert result.returncode == 1 and errors, result.stdout[-2000:] + result.stderr[-2000:]
    assert errors[0]["message"].startswith("frame size 40x40 is out of the export's range: working size 32x32")
    assert "Traceback" not in result.stdout + result.stderr


def test_an_element_that_cannot_load_spgim_says_why(gst_env: dict[str, str], tmp_path: Path) -> None:
    env = {key: value for key, value in gst_env.items() if key != "SPGIM_SITE"}
    env["GST_REGISTRY"] = str(tmp_path / "registry.bin")
    result = _launch(env, "videotestsrc num-buffers=1 ! spgimmatte ! fakesink")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in output
    assert "spgimmatte: cannot load spgim (ModuleNotFoundError" in result.stderr
    assert re.search(r"ERROR: from element \S*spgimmatte0: spgimmatte: cannot load spgim", output), output[-3000:]


# --- the pipelines docs/gstreamer.md shows, run as written -----------------------------------------------


def _documented_pipelines() -> list[str]:
    """The ``sh`` blocks of docs/gstreamer.md's "Pipelines" section, each on one line."""
    text = (HERE.parent / "docs" / "gstreamer.md").read_text()
    section = text.split("\n## Pipelines\n", 1)[1].split("\n## ", 1)[0]
    return [" ".join(block.replace("\\\n", " ").split()) for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def _adapted(pipeline: str, replacements: dict[str, str]) -> str:
    """``pipeline`` with the user's names replaced by the test's; each name must still be in the docs."""
    assert pipeline.startswith("gst-launch-1.0 "), pipeline
    for written, used in replacements.items():
        assert written in pipeline, f"docs/gstreamer.md no longer has {written!r} in: {pipeline}"
        pipeline = pipeline.replace(written, used)
    return pipeline.removeprefix("gst-launch-1.0 ")


def _require_elements(env: dict[str, str], *names: str) -> None:
    missing = [
        name for name in names if subprocess.run(["gst-inspect-1.0", name], env=env, capture_output=True).returncode
    ]
    if missing:
        unavailable(f"GStreamer elements missing: {', '.join(missing)} (gstreamer1.0-plugins-ugly and -bad)")


def test_the_documented_file_pipelines_run(gst_env: dict[str, str], model: Path, tmp_path: Path) -> None:
    """File to file, as docs/gstreamer.md writes it: the composite over a photo as H.264 MP4, and the alpha in
    Matroska; every frame comes out, at the clip's size, and the composite shows the photo where the alpha is 0."""
    from media import make_clip

    _require_elements(gst_env, "x264enc", "mp4mux", "matroskamux")
    composite_pipeline, alpha_pipeline = _documented_pipelines()[:2]
    clip = make_clip(tmp_path / "clip.mp4", size=(160, 96), frames=12, fps=25)
    photo = np.zeros((96, 160, 3), np.uint8)
    photo[:, :, 0] = 255  # pure blue (OpenCV writes BGR)
    cv2.imwrite(str(tmp_path / "beach.png"), photo)
    names = {"location=clip.mp4": f"location={clip.path}", "model=exported": f"model={model} {ONNX}"}
    composite = _adapted(
        composite_pipeline,
        {
            **names,
            "background=beach.jpg": f"background={tmp_path}/beach.png",
            "location=composite.mp4": f"location={tmp_path}/composite.mp4",
        },
    )
    alpha = _adapted(alpha_pipeline, {**names, "location=alpha.mkv": f"location={tmp_path}/alpha.mkv"})
    for pipeline in (composite, alpha):
        result = _launch(gst_env, pipeline)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (
            result.stdout[-2000:] + result.stderr[-2000:]
        )
    with av.open(str(tmp_path / "composite.mp4")) as container:
        composites = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(tmp_path / "alpha.mkv")) as container:
        alphas = [frame.to_ndarray(format="gray").astype(np.float32) / 255 for frame in container.decode(video=0)]
    with av.open(str(clip.path)) as container:
        frames = [frame.to_ndarray(format="rgb24").astype(np.float32) for frame in container.decode(video=0)]
    assert len(composites) == len(alphas) == len(frames) == 12
    assert composites[0].shape == (96, 160, 3) and alphas[0].shape == (96, 160)
    blue = np.array([0.0, 0.0, 255.0], np.float32)
    for image, matte, frame in zip(composites, alphas, frames, strict=True):
        expected = frame * matte[..., None] + blue * (1 - matte[..., None])  # the frame over the photo
        # Within two YUV round trips (GStreamer's and FFmpeg's rounding differ) and H.264 at x264enc's defaults.
        assert np.abs(image.astype(np.float32) - expected).mean() < 4  # 1.7 here; the wrong background: 85


def test_the_documented_live_pipeline_publishes_to_an_rtmp_server(
    gst_env: dict[str, str], model: Path, tmp_path: Path
) -> None:
    """docs/gstreamer.md's webcam pipeline, with a live test source in place of the camera (none here), publishes
    the matted, blurred-background video to a real nginx-rtmp on 127.0.0.1, where a player receives it."""
    import threading
    import time

    from servers import RtmpServer, read_back, require_servers

    require_servers()
    _require_elements(gst_env, "x264enc", "h264parse", "flvmux", "rtmp2sink")
    live = _documented_pipelines()[2]
    camera = "v4l2src device=/dev/video0 ! video/x-raw,width=1280,height=720,framerate=30/1"
    test_source = (
        "videotestsrc is-live=true num-buffers=75 pattern=ball ! video/x-raw,width=320,height=192,framerate=25/1"
    )
    server = RtmpServer(tmp_path)
    found: dict[str, Any] = {"frames": 0, "size": None}

    player = threading.Thread(target=read_back, args=(server.url(), found), kwargs={"deadline": time.monotonic() + 30})
    try:
        pipeline = _adapted(
            live,
            {camera: test_source, "model=live-export": f"model={model} {ONNX}", "rtmp://server/live/KEY": server.url()},
        )
        player.start()
        result = _launch(gst_env, pipeline, timeout=120)
        player.join(40)
    finally:
        server.stop()
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
    # A player joins at a keyframe (every 60 frames here): up to the first 60 frames may be missed.
    assert found["frames"] >= 15 and found["size"] == (320, 192), found
