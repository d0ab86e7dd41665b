"""Audio passed through to an output: probed before the first packet is written, re-timed while remuxed.

Each output route owns what it changes: it remuxes its own copy of a packet (:func:`copy_packet`;
re-timing and muxing rewrite a packet's fields, and a publisher muxes on its own thread) and decodes
through its own decoder (:func:`open_decoder`; a codec context keeps state from packet to packet, so one
shared by two routes would be fed every packet twice, or by two threads at once).

Strict muxers (MP4, MOV) refuse a packet without timestamps or whose decoding time does not
increase ("Invalid argument"); Matroska and AVI inputs carry both kinds (laced blocks, splices,
millisecond rounding). Each input track is probed once, from its first packets, with a second
handle on the file; the output then chooses per track, before writing anything: remux as is,
remux through :class:`PacketRetimer`, or re-encode when the packets carry too little timing to
repair (neither timestamps nor durations, and a codec without a fixed frame size).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from .frames import AudioTiming, AudioTrack

PROBE_PACKETS = 32
# Samples per packet of the codecs whose frames have one size (MP3's MPEG-2 half size is read from the rate).
_FRAME_SAMPLES = {"aac": 1024, "ac3": 1536, "eac3": 1536, "mp2": 1152, "mp3": 1152}


def frame_samples(codec: str, sample_rate: int) -> int | None:
    """Samples in one packet of ``codec``, or None when its packets vary (Opus, Vorbis, PCM, FLAC)."""
    if codec == "mp3" and 0 < sample_rate < 32000:
        return 576
    return _FRAME_SAMPLES.get(codec)


def copy_packet(packet: Any) -> Any:
    """A packet of its own with ``packet``'s bytes, timestamps, duration, flags and side data."""
    import av

    copy = av.Packet(bytes(packet))
    copy.time_base = packet.time_base
    copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
    copy.is_keyframe = packet.is_keyframe
    for side in packet.iter_sidedata():
        copy.set_sidedata(side)
    return copy


def open_decoder(track: AudioTrack) -> Any:
    """A decoder of its own for ``track``, set up from the input stream's parameters (rate, layout, extradata)."""
    import av

    template = track.stream.codec_context
    decoder = av.CodecContext.create(template.codec.name, "r")
    decoder.sample_rate = template.sample_rate
    decoder.layout = template.layout
    if template.extradata:
        decoder.extradata = template.extradata
    return decoder


def probe_audio_timing(path: str, stream_indices: list[int], packets: int = PROBE_PACKETS) -> dict[int, AudioTiming]:
    """The timing of the first ``packets`` packets of each audio stream (container indices) of ``path``.

    A file that cannot be read again yields an empty dict: the tracks are then treated as untested
    and remuxed through the retimer, which repairs whatever comes.
    """
    import av

    counts = {index: [0, 0, 0, 0] for index in stream_indices}  # packets, untimed, disordered, undated
    last_dts: dict[int, int] = {}
    try:
        with av.open(path, metadata_errors="replace") as container:
            streams = [s for s in container.streams.audio if s.index in counts]
            if not streams:
                return {}
            budget = 2 * packets * len(streams)  # a track that ends early must not cost a read of the whole file
            for packet in container.demux(*streams):
                budget -= 1
                if budget < 0 or all(c[0] >= packets for c in counts.values()):
                    break
                entry = counts[packet.stream.index]
                if not packet.size or entry[0] >= packets:
                    continue
                entry[0] += 1
                dts = packet.dts if packet.dts is not None else packet.pts
                if packet.pts is None or dts is None:
                    entry[1] += 1
                elif packet.stream.index in last_dts and dts <= last_dts[packet.stream.index]:
                    entry[2] += 1
                if dts is not None:
                    last_dts[packet.stream.index] = dts
                if not packet.duration:
                    entry[3] += 1
    except (OSError, av.error.FFmpegError):
        return {}
    return {index: AudioTiming(*entry) for index, entry in counts.items()}


class PacketRetimer:
    """Gives each remuxed packet what a strict muxer needs: both timestamps, a rising DTS, a duration.

    A track whose probe was clean is only guarded: a missing DTS becomes the PTS or the previous DTS
    plus its duration, a DTS that does not rise continues from the previous packet. A track whose
    probe found faults is re-timed from its sample counts instead (time base 1/sample rate), as
    rounding to milliseconds cannot be undone otherwise: its clock starts at the first packet's time
    and jumps forward only where the input has a gap of more than 0.1 s. ``repaired`` counts the
    packets whose timestamps changed.
    """

    def __init__(self, track: AudioTrack, *, from_samples: bool) -> None:
        self.track, self.from_samples = track, from_samples
        self.rate = track.sample_rate
        self.fixed = frame_samples(track.codec, self.rate)
        self.pcm_bytes = _pcm_bytes(track.codec) * max(1, track.channels)
        self.step: int | None = None
        if self.fixed and self.rate and track.time_base:
            self.step = max(1, round(Fraction(self.fixed, self.rate) / track.time_base))
        self.last_dts: int | None = None
        self.last_duration: int | None = self.step
        self.clock: int | None = None  # in samples, when re-timing from sample counts
        self.repaired = 0
        self.decoder: Any = None  # Opus, Vorbis, FLAC: packets are decoded to count their samples

    def __call__(self, packet: Any) -> None:
        if self.from_samples and self.rate:
            self._from_samples(packet)
        else:
            self._guard(packet)

    def _guard(self, packet: Any) -> None:
        duration = packet.duration or self.step or self.last_duration
        dts = packet.dts if packet.dts is not None else packet.pts
        expected = None if self.last_dts is None else self.last_dts + (self.last_duration or 1)
        if dts is None:
            dts = expected if expected is not None else 0
        elif self.last_dts is not None and expected is not None and dts <= self.last_dts:
            dts = expected
        pts = packet.pts if packet.pts is not None and packet.pts >= dts else dts
        if (packet.dts, packet.pts) != (dts, pts):
            packet.dts, packet.pts = dts, pts
            self.repaired += 1
        if duration and not packet.duration:
            packet.duration = duration  # filled, not counted: many containers leave it to the muxer
        self.last_dts, self.last_duration = dts, duration or self.last_duration

    def _from_samples(self, packet: Any) -> None:
        samples = self._samples(packet)
        own = (
            None if packet.pts is None or packet.time_base is None else round(packet.pts * packet.time_base * self.rate)
        )
        if self.clock is None:
            self.clock = own or 0
        elif own is not None and own > self.clock + self.rate // 10:
            self.clock = own
        if own != self.clock or packet.dts != packet.pts:
            self.repaired += 1
        packet.time_base = Fraction(1, self.rate)
        packet.pts = packet.dts = self.clock
        packet.duration = samples
        self.clock += samples

    def _samples(self, packet: Any) -> int:
        if self.fixed:
            return self.fixed
        if self.pcm_bytes:
            return packet.size // self.pcm_bytes
        # Opus, Vorbis, FLAC: the packet says how long it is only once decoded.
        if self.decoder is None:
            self.decoder = open_decoder(self.track)
        decoded = self.decoder.decode(packet)
        return sum(frame.samples for frame in decoded) or (
            round(packet.duration * packet.time_base * self.rate) if packet.duration and packet.time_base else 0
        )


def _pcm_bytes(codec: str) -> int:
    """Bytes per sample of one channel of a PCM codec (``pcm_s16le`` 2, ``pcm_mulaw`` 1); 0 otherwise."""
    if not codec.startswith("pcm_"):
        return 0
    if codec in ("pcm_alaw", "pcm_mulaw"):
        return 1
    match = re.match(r"pcm_[suf](\d+)", codec)
    return int(match.group(1)) // 8 if match else 0
