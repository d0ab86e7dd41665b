"""Audio never breaks the video: every container pair we write, timestamps a strict muxer refuses, a track
that fails mid-job.

The matrix runs the real source and output (PyAV's demuxers, muxers and encoders) without a model:
the composite is the frame itself, which is all the audio path cares about.
"""

from __future__ import annotations

import itertools
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_clip

from spgim.streaming.audio import PacketRetimer, probe_audio_timing
from spgim.streaming.frames import AudioPacket, VideoFrame
from spgim.streaming.job import matte_video
from spgim.streaming.options import MattingOptions, Outputs
from spgim.streaming.outputs import open_output
from spgim.streaming.sources import open_source

# Input containers and the audio each can hold (Matroska/WebM store milliseconds, MP4/MOV the sample rate,
# AVI a per-codec base); outputs are the containers `spgim matte` writes with audio.
INPUTS = {
    ".mkv": ("aac", "opus", "vorbis", "mp3", "pcm_s16le"),
    ".webm": ("opus", "vorbis"),
    ".mov": ("aac", "mp3", "pcm_s16le"),
    ".mp4": ("aac", "opus", "mp3"),
    ".avi": ("aac", "mp3", "pcm_s16le"),
}
OUTPUTS = (".mp4", ".mov", ".mkv", ".webm")
# What each output does with each input codec: remuxed as it is, or re-encoded (to AAC, Opus in WebM).
EXPECTED_CODEC = {
    ".mp4": {"aac": "aac", "opus": "opus", "mp3": "mp3", "vorbis": "aac", "pcm_s16le": "aac"},
    ".mov": {"aac": "aac", "opus": "aac", "mp3": "mp3", "vorbis": "aac", "pcm_s16le": "pcm_s16le"},
    ".mkv": {"aac": "aac", "opus": "opus", "mp3": "mp3", "vorbis": "vorbis", "pcm_s16le": "pcm_s16le"},
    ".webm": {"aac": "opus", "opus": "opus", "mp3": "opus", "vorbis": "vorbis", "pcm_s16le": "opus"},
}
FRAMES = 24


def audio_seconds(path: Path) -> float:
    """Seconds of audio the first track decodes to (samples / rate), whatever its timestamps say."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for packet in container.demux(stream) for frame in packet.decode())
        return samples / stream.codec_context.sample_rate


def copy_through(source_path: Path, target: Path) -> tuple[list[str], int]:
    """Every frame of ``source_path`` written unchanged to ``target`` with its audio; (notes, frames)."""
    source = open_source(str(source_path))
    output = open_output(target, kind="composite", info=source.info)
    try:
        for item in source.items(threading.Event()):
            if isinstance(item, VideoFrame):
                output.write(item, item.rgb)
            else:
                output.write_audio(item)
    finally:
        output.close()
        source.close()
    return output.notes, output.frames_written


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("audio-inputs")
    made = {}
    for suffix, codecs in INPUTS.items():
        video = {".webm": "libvpx-vp9", ".avi": "mjpeg"}.get(suffix, "libx264")
        for codec in codecs:
            made[suffix, codec] = make_clip(
                folder / f"in-{codec}{suffix}", frames=FRAMES, codec=video, audio=codec
            ).path
    return made


@pytest.mark.parametrize("out_suffix", OUTPUTS)
@pytest.mark.parametrize(("in_suffix", "codec"), [(s, c) for s, codecs in INPUTS.items() for c in codecs])
def test_every_container_pair_keeps_the_audio(
    inputs: dict[tuple[str, str], Path], tmp_path: Path, in_suffix: str, codec: str, out_suffix: str
) -> None:
    source = inputs[in_suffix, codec]
    target = tmp_path / f"out{out_suffix}"
    notes, frames = copy_through(source, target)
    with av.open(str(target)) as made:
        assert [s.codec_context.codec.canonical_name for s in made.streams.audio] == [EXPECTED_CODEC[out_suffix][codec]]
        assert sum(1 for _ in made.decode(video=0)) == frames == FRAMES
    reencoded = EXPECTED_CODEC[out_suffix][codec] != codec
    assert any("re-encoded" in note for note in notes) == reencoded, notes
    assert audio_seconds(target) == pytest.approx(audio_seconds(source), abs=0.05)


def _pcm_in_tiny_packets(path: Path, *, seconds: float = 1.0) -> Path:
    """Matroska with PCM in 32-sample packets: at 48 kHz and 1 ms steps, every third timestamp repeats."""
    rate = 48000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=rate)
        audio.layout = "mono"
        written = 0
        for index in range(round(24 * seconds)):
            while written < (index + 1) * rate // 24:
                wave = (0.3 * np.sin(2 * np.pi * 440 * (written + np.arange(32)) / rate) * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(wave[None], format="s16", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, written, Fraction(1, rate)
                container.mux(audio.encode(frame))
                written += 32
            image = np.zeros((48, 64, 3), np.uint8)
            image[:, index : index + 10] = 255
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, 24)
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
    return path


def test_repeated_millisecond_timestamps_are_found_before_writing_and_retimed(tmp_path: Path) -> None:
    source = _pcm_in_tiny_packets(tmp_path / "tiny-packets.mkv")
    timing = probe_audio_timing(str(source), [1])[1]
    assert timing.packets == 32 and timing.untimed == 0 and timing.disordered == 10 and not timing.clean
    for suffix in (".mov", ".mkv"):
        notes, frames = copy_through(source, tmp_path / f"out{suffix}")
        assert frames == 24
        assert any("re-timed from its sample counts" in note for note in notes), notes
        assert audio_seconds(tmp_path / f"out{suffix}") == pytest.approx(1.0, abs=1e-3)


def test_the_same_packets_without_the_probe_are_what_mp4_refuses(tmp_path: Path) -> None:
    """The failure the retimer prevents: remuxing those packets as they are stops the muxer."""
    source = _pcm_in_tiny_packets(tmp_path / "tiny-packets.mkv")
    with av.open(str(source)) as inp, av.open(str(tmp_path / "raw.mov"), "w") as out:
        stream = out.add_stream_from_template(inp.streams.audio[0])
        with pytest.raises(av.error.FFmpegError, match="Invalid argument"):
            for packet in inp.demux(inp.streams.audio[0]):
                if packet.size:
                    packet.stream = stream
                    out.mux(packet)


@pytest.mark.parametrize("from_samples", [False, True])
def test_packets_without_timestamps_or_going_back_are_repaired(tmp_path: Path, from_samples: bool) -> None:
    clip = make_clip(tmp_path / "in.mkv", frames=48, audio="aac")
    source = open_source(str(clip.path))
    track = source.info.audio[0]
    source.close()
    retimer = PacketRetimer(track, from_samples=from_samples)
    with av.open(str(clip.path)) as inp, av.open(str(tmp_path / "out.mp4"), "w") as out:
        stream = out.add_stream_from_template(inp.streams.audio[0])
        for number, packet in enumerate(p for p in inp.demux(inp.streams.audio[0]) if p.size):
            if 10 <= number < 15:
                packet.pts = packet.dts = None  # a laced block: only its first frame is timed
            elif 20 <= number < 23:
                packet.pts = packet.dts = packet.pts - 200  # a splice going back 0.2 s
            retimer(packet)
            packet.stream = stream
            out.mux(packet)
    assert retimer.repaired >= 8
    assert audio_seconds(tmp_path / "out.mp4") == pytest.approx(audio_seconds(clip.path), abs=1e-3)
    with av.open(str(tmp_path / "out.mp4")) as made:
        stream = made.streams.audio[0]
        times = [float(p.dts * p.time_base) for p in made.demux(stream) if p.size]
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[-1] == pytest.approx(clip.audio_seconds - 1024 / 48000, abs=0.03)


def test_audio_failing_mid_job_leaves_the_video_whole(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The muxer's refusal is injected on the 20th packet (no real file makes the retimed path fail)."""
    from spgim.streaming import outputs

    clip = make_clip(tmp_path / "in.mkv", frames=48, audio="aac")
    write = outputs._AudioRoute.write
    calls = {"n": 0}

    def refuse_later(route: object, container: object, packet: object) -> None:
        calls["n"] += 1
        if calls["n"] >= 20:
            raise av.error.FFmpegError(22, "Invalid argument")
        write(route, container, packet)  # type: ignore[arg-type]

    monkeypatch.setattr(outputs._AudioRoute, "write", refuse_later)
    result = matte_video(
        clip.path,
        Outputs(composite=tmp_path / "out.mp4"),
        model=model,
        matting=MattingOptions(work_size=128),
        progress=False,
    )
    assert result.frames_out == 48
    assert any("audio track 0 stopped at" in note and "without the rest" in note for note in result.notes)
    with av.open(str(tmp_path / "out.mp4")) as made:
        assert sum(1 for _ in made.decode(video=0)) == 48
    assert 0.3 < audio_seconds(tmp_path / "out.mp4") < clip.audio_seconds - 0.5


def test_audio_packets_arrive_with_their_probe(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=12, audio="aac")
    source = open_source(str(clip.path))
    try:
        timing = source.info.audio[0].timing
        assert timing is not None and timing.clean and timing.packets == clip.audio_packets
        packets = [item for item in source.items(threading.Event()) if isinstance(item, AudioPacket)]
        assert len(packets) == clip.audio_packets
    finally:
        source.close()
