"""``spgim matte`` on real clips from Debian packages, broken files, and a live source on loopback.

(Reconnecting after a publisher outage is tested against real servers in ``test_live_servers.py``.)"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from media import LoopbackSender, corrupt_middle, debian_file, free_port, make_clip, unknown_codec
from streaming_util import probe

from spgim.errors import SpgimError
from spgim.runtime.matting import Matter
from spgim.streaming.job import MatteResult, matte_video
from spgim.streaming.options import MattingOptions, Outputs, SourceOptions

AT_128 = MattingOptions(work_size=128)  # the tiny export's working size in these tests


@pytest.mark.parametrize(
    ("package", "member", "suffix", "audio"),
    [
        ("python3-imageio", "cockatoo.mp4", ".mp4", "mp3"),
        ("python3-imageio", "realshort.mp4", ".mp4", "aac"),
        ("kphotoalbum", "demo/movie.avi", ".mkv", "pcm_u8"),
    ],
)
@pytest.mark.slow
def test_debian_clips_keep_frames_timestamps_size_and_audio(
    model: Path, tmp_path: Path, package: str, member: str, suffix: str, audio: str
) -> None:
    clip = debian_file(package, member)
    out = tmp_path / f"out{suffix}"
    outputs = Outputs(composite=out, alpha=tmp_path / "alpha.mkv")
    result = matte_video(clip, outputs, model=model, matting=AT_128, progress=False)
    source, made = probe(clip), probe(out)
    assert result.frames_out == len(source.times) == len(made.times) > 0
    assert (made.width, made.height) == (source.width, source.height)
    assert made.times == pytest.approx(source.times, abs=1.5e-3)
    assert made.audio_codecs == source.audio_codecs == [audio]
    assert made.audio_packets == source.audio_packets
    assert made.audio_seconds == pytest.approx(source.audio_seconds, abs=1e-3)
    assert len(probe(tmp_path / "alpha.mkv").times) == len(source.times)


def test_pcm_audio_into_mp4_is_reencoded_and_said(model: Path, tmp_path: Path) -> None:
    clip = debian_file("kphotoalbum", "demo/movie.avi")
    result = matte_video(clip, Outputs(composite=tmp_path / "out.mp4"), model=model, matting=AT_128, progress=False)
    made, source = probe(tmp_path / "out.mp4"), probe(clip)
    assert made.audio_codecs == ["aac"]
    assert made.audio_seconds == pytest.approx(source.audio_seconds, abs=0.1)
    assert any("pcm_u8" in note and "AAC" in note for note in result.notes), result.notes


def test_corrupt_packets_are_skipped_and_counted(model: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", size=(96, 64), frames=40, fps=25)
    damage = corrupt_middle(clip.path, tmp_path / "bad.mp4", count=3)
    outputs = Outputs(composite=tmp_path / "out.mp4")
    result = matte_video(damage.path, outputs, model=model, matting=AT_128, progress=False)
    assert result.corrupt >= 1
    assert result.frames_out == 40 - damage.lost == len(probe(tmp_path / "out.mp4").times)


def test_unknown_codec_is_one_line(model: Path, tmp_path: Path) -> None:
    path = unknown_codec(tmp_path / "odd.mkv")
    with pytest.raises(SpgimError, match="codec"):
        matte_video(path, Outputs(composite=tmp_path / "out.mp4"), model=model, progress=False)


class _Slow:
    """The model, slowed down to ``delay`` seconds per call, so a live source outruns it."""

    def __init__(self, model: Path, delay: float) -> None:
        self.matter, self.delay = Matter(model, backend="onnxruntime", work_size=128), delay

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return self.matter(frames)


def test_live_source_reports_latency_and_drops_late_frames(model: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "src.mp4", size=(160, 96), frames=250, fps=25)
    with LoopbackSender(clip.path, free_port(), loop=True) as sender:
        result = matte_video(
            sender.url,
            Outputs(composite=tmp_path / "live.mp4"),
            matter=_Slow(model, 0.12),
            reading=SourceOptions(duration=4.0),
            progress=False,
        )
    assert result.live and result.frames_out > 0
    assert result.dropped > 0 and result.frames_in == result.frames_out + result.dropped
    assert result.latency_p50_s is not None and result.latency_p90_s is not None
    assert 0 < result.latency_p50_s <= result.latency_p90_s
    assert "latency p50" in result.summary_line()
    # Start-up runs from the call to the first written frame: at least one frame's latency, less than the job.
    assert result.startup_s is not None and result.latency_p50_s / 2 < result.startup_s < result.wall_s
    assert f"first frame after {result.startup_s:.2f} s" in result.summary_line()
    assert len(probe(tmp_path / "live.mp4").times) == result.frames_out


def _live_job(
    sender: LoopbackSender,
    model: Path,
    results: list[MatteResult],
    messages: list[str],
    outputs: Outputs,
    reading: SourceOptions,
) -> threading.Thread:
    """A thread matting the sender's stream into ``outputs`` and ``results``, logging to ``messages``."""

    def run() -> None:
        results.append(
            matte_video(
                sender.url, outputs, matter=_Slow(model, 0.0), reading=reading, log=messages.append, progress=False
            )
        )

    return threading.Thread(target=run)


def test_live_source_gives_up_after_the_limit_and_keeps_the_output(model: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "src.mp4", size=(160, 96), frames=250, fps=25)
    sender = LoopbackSender(clip.path, free_port(), loop=True).start()
    timer = threading.Timer(2.0, sender.stop)
    timer.start()
    try:
        with pytest.raises(SpgimError, match="gave up after 1 reconnect"):
            matte_video(
                sender.url,
                Outputs(composite=tmp_path / "live.mp4"),
                matter=_Slow(model, 0.0),
                reading=SourceOptions(reconnects=1),
                log=lambda message: None,
                progress=False,
            )
    finally:
        timer.cancel()
        sender.stop()
    assert len(probe(tmp_path / "live.mp4").times) > 0


@pytest.mark.slow
def test_a_stalled_live_source_is_reopened_within_seconds(model: Path, tmp_path: Path) -> None:
    """The sender freezes for 3 s with its connection open (SIGSTOP): no frame, no EOF, no error from the socket."""
    clip = make_clip(tmp_path / "src.mp4", size=(160, 96), frames=250, fps=25)
    messages: list[str] = []
    results: list[MatteResult] = []
    sender = LoopbackSender(clip.path, free_port(), loop=True).start()
    reading = SourceOptions(duration=9.0, stall_timeout=1.0)
    job = _live_job(sender, model, results, messages, Outputs(alpha=tmp_path / "alpha.mkv"), reading)
    pid = sender._process.pid if sender._process is not None else 0
    try:
        job.start()
        time.sleep(3.0)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(pid, signal.SIGCONT)
        job.join(60)
    finally:
        os.kill(pid, signal.SIGCONT)
        sender.stop()
    assert results, "the live job did not finish"
    assert results[0].reconnects >= 1 and any("stalled" in message for message in messages), messages
    times = probe(tmp_path / "alpha.mkv").times  # the capture clock: gaps are the stream's holes
    assert len(times) == results[0].frames_out > 0
    longest = max(b - a for a, b in itertools.pairwise(times))
    assert 2.5 < longest <= 6.0, f"longest gap {longest:.2f} s; {messages}"
