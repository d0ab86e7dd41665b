"""Shared pieces of the streaming tests: a PyAV probe of what a file holds, and a live job through an outage."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np


@dataclass
class Probe:
    """What a media file holds, as PyAV decodes it."""

    width: int = 0
    height: int = 0
    rotation: int = 0
    codec: str = ""
    pix_fmt: str = ""
    times: list[float] = field(default_factory=list)  # video frame presentation times, seconds
    audio_codecs: list[str] = field(default_factory=list)
    audio_packets: list[int] = field(default_factory=list)
    audio_seconds: list[float] = field(default_factory=list)  # per track: last packet end - first packet start
    frames: list[np.ndarray] = field(default_factory=list)  # decoded frames (when asked for)


def probe(path: Path, *, keep: str | None = None) -> Probe:
    """Decode ``path`` whole; ``keep`` ("rgb24", "gray", "rgba", "yuva444p16le"...) keeps the frames in that format."""
    result = Probe()
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        result.codec = video.codec_context.codec.canonical_name
        result.pix_fmt = video.codec_context.pix_fmt or ""
        audio = list(container.streams.audio)
        result.audio_codecs = [s.codec_context.codec.canonical_name for s in audio]
        counts = [0] * len(audio)
        spans: list[list[float]] = [[] for _ in audio]
        # FFmpeg's own VP9 decoder drops the alpha plane (stored beside the frames); libvpx reads it.
        decoder = av.CodecContext.create("libvpx-vp9", "r") if video.metadata.get("alpha_mode") == "1" else None
        for packet in container.demux(video, *audio):
            if packet.stream.type == "audio":
                if packet.size and packet.pts is not None:
                    i = audio.index(packet.stream)
                    counts[i] += 1
                    start = float(packet.pts * packet.time_base)
                    spans[i] += [start, start + float((packet.duration or 0) * packet.time_base)]
                continue
            for frame in decoder.decode(packet) if decoder is not None else packet.decode():
                result.pix_fmt = frame.format.name
                result.width, result.height, result.rotation = frame.width, frame.height, frame.rotation
                result.times.append(float(frame.pts * frame.time_base))
                if keep is not None:
                    result.frames.append(frame.to_ndarray(format=keep))
        result.audio_packets = counts
        result.audio_seconds = [max(s) - min(s) if s else 0.0 for s in spans]
    return result


def through_outage(
    url: str,
    publisher: Any,
    folder: Path,
    *,
    outage: float,
    under_way: Callable[[], None],
    matter: Any,
    reading: Any,
    composite: Path | None = None,
) -> tuple[Any, list[str], list[float]]:
    """``matte_video(url, ...)`` with ``matter`` and ``reading`` (SourceOptions) in a thread, writing
    ``folder/alpha.mkv`` (and ``composite``); once ``under_way()`` returns, the publisher is stopped for ``outage``
    seconds and started again. Returns the result, the log and the gaps between the alpha's frames (the capture
    clock: the stream's holes), after the checks every outage shares."""
    from spgim.streaming.job import matte_video
    from spgim.streaming.options import Outputs

    outputs = Outputs(composite=[composite] if composite else [], alpha=folder / "alpha.mkv")

    messages: list[str] = []
    results: list[Any] = []

    def run() -> None:
        results.append(matte_video(url, outputs, matter=matter, reading=reading, log=messages.append, progress=False))

    thread = threading.Thread(target=run)
    thread.start()
    under_way()
    publisher.stop()
    time.sleep(outage)
    publisher.start()
    thread.join(60)
    assert results, f"the live job did not finish: {messages}"
    result = results[0]
    assert result.frames_in == result.frames_out + result.dropped
    assert result.reconnects >= 1 and any("reconnect" in message for message in messages), messages
    times = probe(folder / "alpha.mkv").times
    assert len(times) == result.frames_out, messages
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert outage - 0.5 < max(gaps), f"no hole for the outage: {messages}"
    assert sum(gaps[gaps.index(max(gaps)) + 1 :]) > 1.0, f"no frames a second after the outage; {messages}"
    return result, messages, gaps
