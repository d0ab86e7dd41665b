"""What flows between the streaming stages: the input's description, decoded frames, audio packets.

Every frame keeps its own timestamp (``pts`` in ``time_base`` units) from decode to encode, so
variable frame rate survives; images stay in the stored orientation and the rotation travels as
metadata, so the output carries the same display matrix as the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AudioTiming:
    """What the first packets of an audio track say about its timestamps (``streaming.audio`` probes them)."""

    packets: int
    untimed: int  # without a PTS or DTS
    disordered: int  # whose DTS does not rise
    undated: int  # without a duration

    @property
    def clean(self) -> bool:
        """Whether the packets can be remuxed as they are."""
        return self.packets > 0 and not self.untimed and not self.disordered

    def describe(self) -> str:
        """The faults found, in words."""
        faults = [(self.untimed, "without timestamps"), (self.disordered, "out of order")]
        found = [f"{count} {words}" for count, words in faults if count]
        return f"{', '.join(found) or 'none faulty'} of the first {self.packets} packets"


@dataclass(frozen=True)
class AudioTrack:
    """One audio stream of the input, as the sinks need it to remux or re-encode it."""

    index: int
    codec: str
    sample_rate: int
    channels: int
    time_base: Fraction
    stream: Any = field(repr=False, compare=False)  # the PyAV input stream, a template for remuxing
    timing: AudioTiming | None = None  # None: not probed (the retimer still guards the remux)


@dataclass(frozen=True)
class VideoInfo:
    """The input video stream: stored size, timing, orientation, and its audio companions."""

    width: int
    height: int
    time_base: Fraction
    rate: Fraction | None  # average frame rate; None when unknown (live sources, image sequences)
    rotation: int = 0  # display rotation in degrees, counter-clockwise, as ffmpeg's display matrix says
    codec: str = ""
    frames: int = 0  # frame count when the container knows it, else 0
    duration: float | None = None  # seconds, when known
    audio: tuple[AudioTrack, ...] = ()
    live: bool = False
    description: str = ""  # what to print: a file name or a URL with its credentials removed


@dataclass
class VideoFrame:
    """One decoded frame on its way through the pipeline."""

    index: int  # position in decode order of the frames that reached the pipeline
    rgb: np.ndarray  # uint8 (H, W, 3), stored orientation
    pts: int | None
    time_base: Fraction
    captured: float  # time.monotonic() when the frame left the decoder (live latency starts here)
    alpha: np.ndarray | None = None  # float32 (H, W) in [0, 1], filled by the matting stage

    @property
    def time(self) -> float | None:
        """Presentation time in seconds, or None when the source gave no timestamp."""
        return None if self.pts is None else float(self.pts * self.time_base)


@dataclass
class AudioPacket:
    """A demuxed audio packet of track ``track`` (a PyAV packet), passed through untouched."""

    track: int
    packet: Any
