"""``spgim matte`` on synthetic clips: timestamps, rotation, odd sizes, alpha codecs, batching, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_clip
from streaming_util import probe

from spgim.errors import SpgimError
from spgim.runtime.matting import Matter
from spgim.streaming.job import matte_video
from spgim.streaming.options import EngineOptions, MattingOptions, Outputs
from spgim.streaming.urls import redact, scrub

SPGIM = str(Path(sys.executable).with_name("spgim"))
AT_128 = MattingOptions(work_size=128)  # the tiny export's working size in these tests


def test_timestamps_size_audio_and_frame_count_survive(model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=20, fps=25, audio="aac")
    result = matte_video(clip, Outputs(composite=tmp_path / "out.mp4"), model=model, matting=AT_128, progress=False)
    source, out = probe(clip), probe(tmp_path / "out.mp4")
    assert result.frames_in == result.frames_out == len(source.times) == 20
    assert (out.width, out.height) == (source.width, source.height)
    assert out.times == pytest.approx(source.times, abs=1e-3)
    assert out.audio_codecs == ["aac"] and out.audio_packets == source.audio_packets
    assert out.audio_seconds == pytest.approx(source.audio_seconds, abs=1e-3)


def test_rotation_and_odd_size_survive_and_the_model_sees_the_frame_upright(model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "phone.mp4"
    make_clip(clip, size=(75, 49), frames=6, fps=25, rotation=-90)
    seen: list[tuple[int, int]] = []
    runtime = Matter(model, backend="onnxruntime", work_size=128)

    def spy(frames: np.ndarray) -> np.ndarray:
        seen.append(frames.shape[1:3])
        return runtime(frames)

    matte_video(clip, Outputs(composite=tmp_path / "out.mp4", alpha=tmp_path / "alpha.mkv"), matter=spy, progress=False)
    for path in (tmp_path / "out.mp4", tmp_path / "alpha.mkv"):
        out = probe(path)
        assert (out.width, out.height, out.rotation) == (75, 49, -90)
        assert len(out.times) == 6
    assert set(seen) == {(75, 49)}  # stored 75 wide x 49 high, shown rotated: the model got 49 wide x 75 high


def test_variable_frame_rate_timestamps_survive(model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "vfr.mkv"
    stamps = [0, 40, 70, 150, 160, 260, 300, 333, 420, 500]
    make_clip(clip, frames=len(stamps), times=[stamp / 1000 for stamp in stamps])
    matte_video(clip, Outputs(composite=tmp_path / "out.mp4"), model=model, matting=AT_128, progress=False)
    assert probe(tmp_path / "out.mp4").times == pytest.approx([s / 1000 for s in stamps], abs=1e-3)


@pytest.mark.parametrize(("name", "tolerance"), [("fg.mov", 2), ("fg.webm", 12)])
def test_alpha_codecs_decode_back_to_the_models_alpha(model: Path, tmp_path: Path, name: str, tolerance: int) -> None:
    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=5, fps=25)
    decoded = probe(clip, keep="rgb24").frames
    matte_video(clip, Outputs(foreground=tmp_path / name), model=model, matting=AT_128, progress=False)
    expected = Matter(model, backend="onnxruntime", work_size=128)(np.stack(decoded))
    out = probe(tmp_path / name, keep="rgba")
    assert out.pix_fmt.startswith("yuva") and len(out.frames) == 5
    for image, alpha in zip(out.frames, expected, strict=True):
        assert np.abs(image[..., 3].astype(np.float64) - alpha * 255).max() <= tolerance


def test_batches_give_the_same_alpha_as_single_frames(model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=7, fps=25)
    for batch in (1, 3):
        outputs, engine = Outputs(alpha=tmp_path / f"a{batch}"), EngineOptions(batch=batch)
        matte_video(clip, outputs, model=model, engine=engine, matting=AT_128, progress=False)
    singles = sorted((tmp_path / "a1").iterdir())
    assert len(singles) == 7
    for one, three in zip(singles, sorted((tmp_path / "a3").iterdir()), strict=True):
        assert one.read_bytes() == three.read_bytes()


def test_background_image_and_colour(model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=3, fps=25)
    fixed = lambda frames: np.zeros(frames.shape[:3], np.float32)  # noqa: E731 - alpha 0: only background
    matte_video(clip, Outputs(composite=tmp_path / "red.mkv", background="#ff0000"), matter=fixed, progress=False)
    frame = probe(tmp_path / "red.mkv", keep="rgb24").frames[0]
    assert np.abs(frame.astype(int) - [255, 0, 0]).max() <= 12
    with pytest.raises(SpgimError, match="background"):
        matte_video(clip, Outputs(composite=tmp_path / "x.mp4", background="nope.png"), matter=fixed, progress=False)


def _spgim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SPGIM, *args], capture_output=True, text=True, timeout=300, check=False)


def _one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], result.stderr


def test_bad_inputs_are_one_line(model: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(os.urandom(4096))
    with av.open(str(tmp_path / "sound.m4a"), "w") as container:
        stream = container.add_stream("aac", rate=22050)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 22050), np.float32), format="fltp", layout="mono")
        chunk.sample_rate, chunk.pts = 22050, 0
        for packet in [*stream.encode(chunk), *stream.encode()]:
            container.mux(packet)
    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=2, fps=25)
    cases = [
        ((str(tmp_path / "missing.mp4"), "--model", str(model), "--output", out), "no such"),
        ((str(tmp_path / "empty.mp4"), "--model", str(model), "--output", out), "empty"),
        ((str(tmp_path / "junk.mp4"), "--model", str(model), "--output", out), "junk.mp4"),
        ((str(tmp_path / "sound.m4a"), "--model", str(model), "--output", out), "no video"),
        ((str(clip), "--model", str(model), "--output", "/proc/nope/out.mp4"), "out.mp4"),
        ((str(clip), "--model", str(tmp_path / "nomodel"), "--output", out), "nomodel"),
    ]
    # Each is a process start and a model load: three at a time.
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda case: _spgim("matte", *case[0]), cases))
    for (_, word), result in zip(cases, results, strict=True):
        _one_line_error(result, word)


def test_truncated_file_keeps_what_decodes(model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "in.mkv"
    make_clip(clip, frames=30, fps=25)
    data = clip.read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) * 2 // 3])
    outputs = Outputs(composite=tmp_path / "out.mp4")
    result = matte_video(tmp_path / "cut.mkv", outputs, model=model, matting=AT_128, progress=False)
    assert 0 < result.frames_out < 30
    assert len(probe(tmp_path / "out.mp4").times) == result.frames_out


def test_credentials_never_reach_messages() -> None:
    url = "rtsp://admin:hunter2@127.0.0.1:9/live?token=s3cret&channel=1"
    assert "hunter2" not in redact(url) and "s3cret" not in redact(url) and "channel=1" in redact(url)
    assert "hunter2" not in scrub(f"Connection refused: {url}", url)
    result = _spgim("matte", url, "--model", "nowhere", "--output", "/tmp/x.mp4")
    assert result.returncode != 0 and "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_file_leaves_a_playable_output(model: Path, tmp_path: Path, stop: int) -> None:
    clip = tmp_path / "long.mp4"
    make_clip(clip, size=(320, 240), frames=400, fps=25)
    out, progress = tmp_path / "out.mp4", tmp_path / "alpha"  # the PNGs show how far the job is
    command = [SPGIM, "matte", str(clip), "--model", str(model), "--output", str(out), "--alpha", str(progress)]
    process = subprocess.Popen(
        [*command, "--work-size", "256", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell running this suite in the background ignores SIGINT, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not progress.is_dir() or len(list(progress.iterdir())) < 10):
        time.sleep(0.1)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    frames = len(probe(out).times)
    assert 0 < frames < 400


def test_bench_video_adds_end_to_end_rows(model: Path, tmp_path: Path) -> None:
    from spgim.cli import main

    clip = tmp_path / "in.mp4"
    make_clip(clip, frames=6, fps=25, audio="aac")
    argv = ["bench", "--model", str(model), "--backend", "onnxruntime", "--precision", "fp32", "--size", "64x64"]
    argv += ["--warmup", "0", "--iters", "1", "--video", str(clip), "--work-size", "128"]
    argv += ["--keyframe-interval", "3", "--keyframe-ramp", "5"]
    assert main([*argv, "--json", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")]) == 0
    video = json.loads((tmp_path / "b.json").read_text())["video"]
    assert len(video) == 1 and video[0]["frames"] == 6 and video[0]["work_size"] == [96, 64]
    assert (video[0]["keyframe_interval"], video[0]["keyframe_ramp"]) == (3, 3)  # the ramp is capped at K
    assert video[0]["ratio"] == pytest.approx(video[0]["end_to_end_fps"] / video[0]["model_fps"])
    assert video[0]["upsampling"] == "guided-cv2"  # auto on the CPU
    assert (tmp_path / "b.png").stat().st_size > 0
    assert main([*argv, "--upsample", "bilinear", "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["video"][0]["upsampling"] == "bilinear"
