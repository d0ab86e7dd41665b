"""The test media helpers themselves: made clips hold what was asked, broken files break as documented."""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import (
    LoopbackSender,
    audio_only,
    corrupt_middle,
    debian_file,
    decode_count,
    empty_file,
    free_port,
    make_clip,
    truncate,
    unknown_codec,
)

# package, member, codec, (width, height), frames, audio codec, audio packets
DEBIAN_CLIPS = [
    ("python3-imageio", "cockatoo.mp4", "h264", (1280, 720), 280, "mp3float", 388),
    ("python3-imageio", "realshort.mp4", "h264", (320, 240), 36, "aac", 55),
    ("kphotoalbum", "movie.avi", "mjpeg", (160, 120), 68, "pcm_u8", 5),
]


def _decode(path: Path) -> tuple[str, list[av.VideoFrame]]:
    """The video codec's name and every decoded frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.name, list(container.decode(stream))


def _time(frame: av.VideoFrame) -> Fraction:
    """A frame's presentation time in seconds, exact."""
    assert frame.pts is not None and frame.time_base is not None
    return frame.pts * frame.time_base


def _audio_packets(path: Path) -> tuple[str, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return stream.codec_context.name, sum(1 for packet in container.demux(stream) if packet.size)


def test_rotated_odd_sized_clip_keeps_rotation_size_and_pts(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "phone.mp4", size=(33, 17), frames=8, rotation=-90)
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (33, 17)
        assert stream.codec_context.pix_fmt == clip.pix_fmt == "yuv444p"
        frames = list(container.decode(stream))
    assert [f.rotation for f in frames] == [-90] * 8
    assert tuple(f.pts for f in frames) == clip.pts
    first = frames[0].to_ndarray(format="rgb24")
    assert first[0, 0, 0] > 200 > first[0, 0, 2]  # the red marker sits top-left of the coded image


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_reads_back_counter_clockwise_in_minus_180_to_180(tmp_path: Path, rotation: int) -> None:
    clip = make_clip(tmp_path / "r.mkv", frames=2, rotation=rotation)
    _, frames = _decode(clip.path)
    assert frames[0].rotation == (rotation + 180) % 360 - 180


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_variable_frame_rate_timestamps_come_back_exactly(tmp_path: Path, suffix: str) -> None:
    clip = make_clip(tmp_path / f"vfr{suffix}", frames=20, fps=Fraction(30000, 1001), vfr=True, seed=3)
    gaps = set(np.diff(clip.pts).tolist())
    assert len(gaps) >= 2
    _, frames = _decode(clip.path)
    assert [_time(f) for f in frames] == list(clip.times)
    assert not np.array_equal(frames[0].to_ndarray(), frames[1].to_ndarray())


@pytest.mark.parametrize(
    ("name", "codec", "decoder"),
    [("h265.mp4", "libx265", "hevc"), ("vp9.webm", "libvpx-vp9", "vp9"), ("mj.avi", "mjpeg", "mjpeg")],
)
def test_other_codecs_and_containers_keep_times(tmp_path: Path, name: str, codec: str, decoder: str) -> None:
    clip = make_clip(tmp_path / name, size=(97, 65) if codec != "libvpx-vp9" else (96, 64), frames=6, codec=codec)
    found, frames = _decode(clip.path)
    assert found == decoder
    assert [_time(f) for f in frames] == list(clip.times)
    assert (frames[0].width, frames[0].height) == clip.size


@pytest.mark.parametrize(
    ("name", "audio", "decoder"),
    [
        ("a.mp4", "aac", "aac"),
        ("a.mov", "mp3", "mp3float"),
        ("a.mkv", "pcm_s16le", "pcm_s16le"),
        ("a.mp4", "opus", "opus"),
    ],
)
def test_audio_track_lasts_as_long_as_the_video(tmp_path: Path, name: str, audio: str, decoder: str) -> None:
    clip = make_clip(tmp_path / name, frames=12, fps=24, audio=audio)
    assert _audio_packets(clip.path) == (decoder, clip.audio_packets)
    assert clip.audio_packets > 0
    assert clip.audio_seconds == pytest.approx(float(clip.duration), abs=1e-3)


def test_empty_and_truncated_files_fail_to_open(tmp_path: Path) -> None:
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(empty_file(tmp_path / "empty.mp4")))
    clip = make_clip(tmp_path / "whole.mp4", frames=24)
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(truncate(clip.path, tmp_path / "cut.mp4", 0.5)))


def test_truncated_faststart_mp4_opens_and_ends_early(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "whole.mp4", frames=24, faststart=True)
    frames, errors = decode_count(truncate(clip.path, tmp_path / "cut.mp4", 0.8))
    assert 0 < frames < 24 and errors <= 1


def test_corrupt_middle_loses_only_the_damaged_frames(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "whole.mp4", frames=30, audio="aac")
    damage = corrupt_middle(clip.path, tmp_path / "bad.mp4", count=3)
    assert damage.frames_in == 30
    assert damage.errors == 3 and damage.lost == 3
    assert all(10 <= index < 20 for index in damage.packets)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    with av.open(str(audio_only(tmp_path / "tone.m4a"))) as container:
        assert not container.streams.video and len(container.streams.audio) == 1


def test_unknown_codec_opens_but_cannot_be_decoded(tmp_path: Path) -> None:
    with av.open(str(unknown_codec(tmp_path / "odd.mkv"))) as container:
        stream = container.streams.video[0]
        assert stream.type == "video" and stream.codec_context is None
        with pytest.raises(av.error.DecoderNotFoundError):
            next(iter(container.decode(stream)))


def _receive(url: str, limit: int | None = None) -> int:
    frames = 0
    with av.open(url, timeout=(10, 10)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            frames += len(packet.decode())
            if limit is not None and frames >= limit:
                break
    return frames


def test_loopback_sender_serves_stops_and_restarts(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "live.mp4", frames=12, audio="aac")
    port = free_port()
    with LoopbackSender(clip.path, port, realtime=False) as sender:
        assert _receive(sender.url) == 12
        sender.stop()
        with pytest.raises(av.error.ConnectionRefusedError):
            av.open(sender.url, timeout=(2, 2))
        sender.restart()
        assert sender.port == port
        assert _receive(sender.url) == 12


def test_stopping_a_live_sender_ends_the_receivers_stream(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "live.mp4", frames=12)
    with (
        LoopbackSender(clip.path, 0, realtime=True, loop=True) as sender,
        av.open(sender.url, timeout=(10, 10), options={"fpsprobesize": "0"}) as live,
    ):
        stream = live.streams.video[0]
        frames, at_stop = 0, None
        for packet in live.demux(stream):
            frames += len(packet.decode())
            if at_stop is None and frames >= 3:
                sender.stop()
                at_stop = frames
        # The demux loop ended at EOF, although the sender loops the 12-frame clip forever: after the
        # stop only what was already in flight arrived, less than one more pass over the clip.
        assert at_stop is not None and frames - at_stop < 12, (at_stop, frames)


@pytest.mark.parametrize(("package", "member", "codec", "size", "frames", "audio", "packets"), DEBIAN_CLIPS)
def test_debian_clips_are_what_the_docstring_says(
    package: str, member: str, codec: str, size: tuple[int, int], frames: int, audio: str, packets: int
) -> None:
    path = debian_file(package, member)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec
        # One packet per frame in these clips (checked by decoding them whole, which takes seconds).
        assert sum(1 for packet in container.demux(stream) if packet.size) == frames
    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
        assert (first.width, first.height) == size
    assert _audio_packets(path) == (audio, packets)


def test_debian_file_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    first = debian_file("python3-imageio", "realshort.mp4")

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached package was downloaded again")

    monkeypatch.setattr(subprocess, "run", no_download)
    assert debian_file("python3-imageio", "imageio/resources/images/realshort.mp4") == first
