"""The demo clip of ``spgim data clip``: frames, rate, audio, motion, ground truth and determinism."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from spgim.errors import SpgimError
from spgim.train.data.clips import ClipInfo, render_clip

SPGIM = str(Path(sys.executable).with_name("spgim"))
SIZE = (128, 96)


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> ClipInfo:
    folder = tmp_path_factory.mktemp("clip")
    return render_clip(folder / "demo.mp4", frames=24, size=SIZE, fps=24, seed=3, alpha_path=folder / "alpha.mkv")


def test_clip_has_the_frames_rate_size_and_audio_asked_for(clip: ClipInfo) -> None:
    with av.open(str(clip.path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert (video.codec_context.width, video.codec_context.height) == SIZE
        assert video.average_rate == 24
        assert audio.codec_context.name == "aac"
        packets = [packet for packet in container.demux(audio) if packet.size]
        time_base = audio.time_base
    assert time_base is not None
    spans = [(p.pts, p.pts + p.duration) for p in packets if p.pts is not None and p.duration]
    seconds = (max(end for _, end in spans) - max(0, min(start for start, _ in spans))) * time_base
    # AAC adds up to one 1024-sample frame of padding at the end.
    assert float(seconds) == pytest.approx(clip.duration, abs=1024 / 48000 + 1e-3)
    with av.open(str(clip.path)) as container:
        pts = [frame.time for frame in container.decode(video=0)]
    assert pts == pytest.approx([i / 24 for i in range(24)])


def test_objects_move_and_the_alpha_matches_the_picture(clip: ClipInfo) -> None:
    frames = _frames(clip.path)
    assert len(frames) == clip.frames == len(clip.alpha)
    changed = [np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(frames)]
    assert min(changed) > 0.5
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(clip.alpha))
    assert 0.02 < (clip.alpha > 127).mean() < 0.6
    with av.open(str(clip.alpha_path)) as container:
        stored = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert np.array_equal(np.stack(stored), clip.alpha)  # lossless


def test_same_seed_same_clip_other_seed_other_clip(tmp_path: Path, clip: ClipInfo) -> None:
    again = render_clip(tmp_path / "again.mp4", frames=24, size=SIZE, fps=24, seed=3)
    assert np.array_equal(again.alpha, clip.alpha)
    assert all(np.array_equal(a, b) for a, b in zip(_frames(again.path), _frames(clip.path), strict=True))
    other = render_clip(tmp_path / "other.mp4", frames=2, size=SIZE, fps=24, seed=4)
    assert not np.array_equal(other.alpha[0], clip.alpha[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (127, 96)}, "even"),
        ({"frames": 0}, "frames"),
        ({"fps": 0}, "fps"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_one_line(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(SpgimError, match=message):
        render_clip(tmp_path / "x.mp4", **kwargs)


def test_command_line_writes_a_clip(tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    argv = [SPGIM, "data", "clip", "--out", str(out), "--frames", "6", "--size", "64x64", "--fps", "30000/1001"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "wrote 6 frames of 64x64" in result.stdout
    assert len(_frames(out)) == 6
    helped = subprocess.run([SPGIM, "data", "clip", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert "spgim data clip" in helped.stdout.split("example:")[1]
