"""Output files: composite, alpha and foreground-with-alpha videos or PNG sequences, audio passed through.

The codec follows the extension (or ``codec``): H.264 in .mp4/.mov/.mkv, VP9 in .webm, MJPEG in
.avi, ProRes 4444 (``yuva444p10le``) for a foreground in .mov, VP9 with alpha (``yuva420p``) for a
foreground in .webm/.mkv, PNGs in a folder or ``%05d.png`` pattern. Every frame keeps the input's
timestamp, so the frame count and variable frame rate survive; the display rotation is copied;
odd sizes are encoded 4:4:4 where 4:2:0 needs even sides. Audio packets are remuxed untouched when
the container takes the codec (re-timed where their timestamps are missing or out of order), otherwise
re-encoded (AAC, Opus for WebM) and a note says so; a track the muxer still refuses mid-job is
dropped from that output with a note, and the video is finished without it. Each audio route remuxes
its own copy of every packet and decodes through its own decoder (see :mod:`.audio`).

A timestamp that jumps back by more than a frame (a spliced or looped input) continues the output's
clock one frame on from the last frame instead of squeezing the frames one tick apart; a published
stream also closes up a forward jump of more than :data:`LIVE_GAP_S`, so its viewers do not wait
through it. A failure of the codec, the muxer or the destination's socket is one :class:`SpgimError`
line naming the output; closing finishes the file (trailer included) or says why it could not.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from spgim.errors import SpgimError

from .audio import PacketRetimer, copy_packet, frame_samples, open_decoder
from .composite import upright
from .frames import AudioPacket, AudioTrack, VideoFrame, VideoInfo
from .urls import error_reason

KINDS = ("composite", "alpha", "foreground")
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass(frozen=True)
class VideoCodec:
    """One codec ``spgim matte`` writes: its encoder, pixel formats and how 0-100 quality maps onto it."""

    name: str
    encoder: str  # FFmpeg's encoder; "" for PNG sequences, which OpenCV writes
    pix_fmt: str
    alpha_pix_fmt: str | None = None  # the foreground's, when the codec has an alpha plane
    odd_pix_fmt: str | None = None  # when a side is odd and ``pix_fmt`` subsamples
    scale: tuple[str, int, int] | None = None  # (option, best, worst) the quality maps onto linearly
    fixed: tuple[tuple[str, str], ...] = ()  # options always set


@dataclass(frozen=True)
class Container:
    """One file extension: the codecs chosen by default and the audio it holds as it is.

    ``audio_kept`` was checked against FFmpeg 8's muxers; other audio is re-encoded to ``audio_encoder``.
    """

    suffix: str
    codec: str
    foreground_codec: str | None
    audio_kept: frozenset[str]
    audio_encoder: str = "aac"


_CODECS = {
    codec.name: codec
    for codec in (
        VideoCodec("h264", "libx264", "yuv420p", odd_pix_fmt="yuv444p", scale=("crf", 0, 51)),
        VideoCodec("h265", "libx265", "yuv420p", odd_pix_fmt="yuv444p", scale=("crf", 0, 51)),
        VideoCodec(
            "vp9",
            "libvpx-vp9",
            "yuv420p",
            alpha_pix_fmt="yuva420p",
            scale=("crf", 0, 63),
            fixed=(("b", "0"), ("deadline", "good"), ("cpu-used", "4"), ("row-mt", "1")),
        ),
        # ProRes: HQ 4:2:2 for opaque video, 4444 with alpha for the foreground; visually lossless unless asked.
        VideoCodec("prores", "prores_ks", "yuv422p10le", alpha_pix_fmt="yuva444p10le", scale=("qscale", 1, 31)),
        VideoCodec("mjpeg", "mjpeg", "yuvj444p", scale=("qscale", 2, 31)),
        VideoCodec("png", "", "rgb24", alpha_pix_fmt="rgba"),
    )
}
CODECS = tuple(_CODECS)
_BASIC_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
_CONTAINERS = {
    container.suffix: container
    for container in (
        Container(".mp4", "h264", None, _BASIC_AUDIO | {"opus", "flac"}),
        Container(".m4v", "h264", None, _BASIC_AUDIO),
        Container(
            ".mov", "h264", "prores", _BASIC_AUDIO | {"pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le", "pcm_u8"}
        ),
        Container(".mkv", "h264", "vp9", _BASIC_AUDIO | {"opus", "vorbis", "flac", "pcm_s16le", "pcm_s24le", "pcm_u8"}),
        Container(".webm", "vp9", "vp9", frozenset({"opus", "vorbis"}), audio_encoder="libopus"),
        Container(".avi", "mjpeg", None, frozenset({"mp3", "ac3", "pcm_s16le", "pcm_u8"})),
    )
}
_RTP_AUDIO = frozenset({"aac", "opus", "mp3"})
STREAM_FORMATS = {  # FFmpeg's muxer per destination scheme, and the audio it carries as it is
    "rtmp": Container(".flv", "h264", None, frozenset({"aac", "mp3"})),
    "rtmps": Container(".flv", "h264", None, frozenset({"aac", "mp3"})),
    "rtsp": Container(".rtsp", "h264", None, _RTP_AUDIO),
    "rtsps": Container(".rtsp", "h264", None, _RTP_AUDIO),
    "srt": Container(".ts", "h264", None, _BASIC_AUDIO),
    "udp": Container(".ts", "h264", None, _BASIC_AUDIO),
    "tcp": Container(".ts", "h264", None, _BASIC_AUDIO),
}
LIVE_GAP_S = 1.0  # a published stream's timestamps never jump forward by more than this
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
_IMAGE_FORMAT = {"composite": "rgb24", "alpha": "gray", "foreground": "rgba"}


def _is_sequence(path: Path) -> bool:
    return "%" in path.name or path.is_dir() or not path.suffix


def choose_codec(path: Path, kind: str, codec: str | None) -> str:
    """The codec for ``kind`` written to ``path``; one line naming the choices when none fits."""
    if kind not in KINDS:
        raise SpgimError(f"unknown output kind {kind!r}; choose {', '.join(KINDS)}")
    if codec is not None:
        name = {"hevc": "h265", "avc": "h264", "x264": "h264", "x265": "h265"}.get(codec.lower(), codec.lower())
        if name not in _CODECS:
            raise SpgimError(f"unknown codec {codec!r}; choose {', '.join(CODECS)}")
        if kind == "foreground" and _CODECS[name].alpha_pix_fmt is None:
            alpha = ", ".join(c.name for c in _CODECS.values() if c.alpha_pix_fmt)
            raise SpgimError(f"{name} has no alpha plane; the foreground needs {alpha}")
        if name == "png" and not _is_sequence(path):
            raise SpgimError(f"{path}: PNG output is a folder or a pattern such as frames/%05d.png")
        return name
    if _is_sequence(path):
        return "png"
    suffix = path.suffix.lower()
    container = _CONTAINERS.get(suffix)
    chosen = container and (container.foreground_codec if kind == "foreground" else container.codec)
    if not chosen:
        fits = [c.suffix for c in _CONTAINERS.values() if (c.foreground_codec if kind == "foreground" else c.codec)]
        choices = ", ".join(sorted(fits)) + ", or a folder for PNGs"
        raise SpgimError(f"{path.name}: cannot write a {kind} video as {suffix or 'no extension'}; use {choices}")
    return chosen


def _quality_options(
    codec: str, quality: int | None, *, live: bool = False, preset: str | None = None
) -> dict[str, str]:
    """0-100 (higher is better) mapped to each encoder's own scale; None: visually lossless defaults.

    H.264/H.265 files use ``veryfast``; live sources ``ultrafast`` with zero-latency tuning (no frame
    look-ahead): at 1280x720 x264 costs 14 ms of CPU per frame ultrafast, 27 superfast, 36 veryfast
    (``scripts/pipeline_profile.py``), and a live frame has 66 ms of CPU on two cores for everything.
    """
    if preset is not None and preset not in X264_PRESETS:
        raise SpgimError(f"unknown encoder preset {preset!r}; choose one of {', '.join(X264_PRESETS)}")
    if quality is not None and not 0 <= quality <= 100:
        raise SpgimError(f"quality must be 0-100, got {quality}")
    record = _CODECS[codec]
    options = dict(record.fixed)
    if record.scale is not None and (quality is not None or codec != "prores"):
        option, best, worst = record.scale
        worse = 1.0 - (quality if quality is not None else 65) / 100.0
        options[option] = str(max(best, round(best + (worst - best) * worse)))
    if codec in ("h264", "h265"):
        # veryfast: 28 ms/frame at 1280x720 against medium's 60 (the encoder shares the cores with the model).
        options["preset"] = preset or ("ultrafast" if live else "veryfast")
        if live:
            options["tune"] = "zerolatency"
    return options


class Output(abc.ABC):
    """One output being written; see :func:`open_output`.

    ``publishes`` marks a network destination: when a job ends, files are finalised first, then these.
    """

    path: Path
    kind: str
    codec: str
    notes: list[str]
    frames_written: int
    publishes: bool = False

    @abc.abstractmethod
    def write(self, frame: VideoFrame, image: np.ndarray) -> None:
        """Write one frame's image (uint8 RGB, greyscale or RGBA, the stored orientation)."""

    def write_audio(self, packet: AudioPacket) -> None:
        """Mux (or re-encode) one input audio packet; outputs without audio ignore it."""
        return None

    def close(self, hurry: threading.Event | None = None) -> None:
        """Flush and finalise; safe to call twice and after a failure.

        Args:
            hurry: set when the job must end now (a second Ctrl-C): a network destination then stops
                waiting for its peer; a file is still finished.

        Raises:
            SpgimError: the output could not be finished (a full disk, say); it is closed all the same.
        """
        return None


class PngSequence(Output):
    """Numbered PNGs, upright (an image has no display rotation)."""

    def __init__(self, path: Path, kind: str, info: VideoInfo) -> None:
        self.kind, self.codec, self.notes, self.frames_written = kind, "png", [], 0
        self.pattern = path if "%" in path.name else path / "%06d.png"
        self.path = self.pattern.parent
        self.rotation = info.rotation
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".spgim-write-test"
            probe.touch()
            probe.unlink()
        except OSError as error:
            raise SpgimError(f"cannot write PNGs into {self.path}: {error.strerror or error}") from None
        if info.audio:
            self.notes.append(f"{self.path}: a PNG sequence holds no audio; the audio was not written there")

    def write(self, frame: VideoFrame, image: np.ndarray) -> None:
        import cv2

        image = upright(image, self.rotation)
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR)
        target = Path(str(self.pattern) % self.frames_written)
        if not cv2.imwrite(str(target), image):
            raise SpgimError(f"cannot write {target}")
        self.frames_written += 1


@dataclass(frozen=True)
class Destination:
    """Where a :class:`VideoOutput` goes: a file, or a stream published live (see :mod:`.publish`).

    ``open`` returns PyAV's output container; ``label`` names it in messages; ``rules`` says which
    audio it holds as it is; ``live`` encodes for low delay (ultrafast, zero latency, a keyframe a second).
    """

    label: str
    rules: Container
    open: Callable[[], Any]
    live: bool = False


def file_destination(path: Path) -> Destination:
    """A media file at ``path`` (its folder is created)."""
    import av

    def open_file() -> Any:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return av.open(str(path), "w")
        except (OSError, av.error.FFmpegError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise SpgimError(f"cannot write {path}: {reason}") from None

    suffix = path.suffix.lower()
    # An extension outside the table (an explicit --codec into .ts, say): keep no audio as it is.
    return Destination(path.name, _CONTAINERS.get(suffix) or Container(suffix, "", None, frozenset()), open_file)


class VideoOutput(Output):
    """A video written through PyAV, with the input's audio tracks when it is a composite or foreground."""

    def __init__(
        self,
        path: Path,
        kind: str,
        codec: str,
        info: VideoInfo,
        quality: int | None,
        audio: bool,
        preset: str | None = None,
        destination: Destination | None = None,
    ) -> None:
        self.path, self.kind, self.codec, self.info = path, kind, codec, info
        self.destination = destination or file_destination(path)
        self.label = self.destination.label
        self.notes: list[str] = []
        self.frames_written = 0
        self.closed = False
        self.broken = False  # a write failed: the muxer's state is unknown, nothing more is encoded into it
        self.last_pts: int | None = None
        self.shift = 0  # added to the input's timestamps after a jump (see _timestamp)
        odd = info.width % 2 or info.height % 2
        if codec == "h265" and info.width < 64:
            raise SpgimError(f"H.265 needs frames at least 64 pixels wide (these are {info.width}); use h264")
        self.container: Any = self.destination.open()
        try:
            self.preset = preset
            self._add_video(codec, info, quality, bool(odd))
            self.audio: dict[int, _AudioRoute] = {}
            self.dropped_audio: list[_AudioRoute] = []
            if audio and kind != "alpha":
                for track in info.audio:
                    self._add_audio(track)
        except BaseException:
            self.container.close()
            raise

    def _add_video(self, codec: str, info: VideoInfo, quality: int | None, odd: bool) -> None:
        record = _CODECS[codec]
        rate = info.rate if info.rate else Fraction(25)
        stream = self.container.add_stream(record.encoder, rate=rate)
        stream.width, stream.height = info.width, info.height
        if self.kind == "foreground" and record.alpha_pix_fmt:
            stream.pix_fmt = record.alpha_pix_fmt
        else:
            stream.pix_fmt = record.odd_pix_fmt if odd and record.odd_pix_fmt else record.pix_fmt
        live = info.live or self.destination.live
        options = _quality_options(codec, quality, live=live, preset=self.preset)
        if self.destination.live:
            options["g"] = str(max(1, round(rate)))  # a keyframe a second: players join and recover within it
        if codec == "prores":
            options["profile"] = "4444" if self.kind == "foreground" else "hq"
        stream.options = options
        if info.time_base:
            stream.time_base = info.time_base
            stream.codec_context.time_base = info.time_base
        if info.rotation:
            stream.set_display_rotation(info.rotation)
        self.video = stream

    def _add_audio(self, track: AudioTrack) -> None:
        import av

        container = self.destination.rules
        if track.channels <= 0 or track.sample_rate <= 0 or track.codec == "unknown":
            self.notes.append(
                f"{self.label}: audio track {track.index} left out: its header is damaged "
                f"({track.codec}, {track.channels} channels, {track.sample_rate} Hz)"
            )
            return
        timing = track.timing
        repairable = timing is None or timing.untimed < timing.packets or timing.undated < timing.packets
        repairable = repairable or frame_samples(track.codec, track.sample_rate) is not None
        if track.codec in container.audio_kept and repairable:
            stream = self.container.add_stream_from_template(track.stream)
            faulty = timing is not None and not timing.clean
            retimer = PacketRetimer(track, from_samples=faulty)
            self.audio[track.index] = _AudioRoute(track, stream, retimer=retimer)
            if timing is not None and faulty:
                self.notes.append(
                    f"{self.label}: audio track {track.index} ({track.codec}) remuxed, re-timed from its "
                    f"sample counts ({timing.describe()})"
                )
            return
        target = container.audio_encoder
        # Opus runs at 48 kHz; AAC at the next standard rate up (an 11024 Hz camera track becomes 11025 Hz).
        rate = 48000 if target == "libopus" else next((r for r in _AAC_RATES if r >= track.sample_rate), 48000)
        encoder = self.container.add_stream(target, rate=rate)
        context = track.stream.codec_context
        channels = context.layout.nb_channels if context is not None else 2
        # Cameras write "1 channels" (no channel order); encoders want a named layout.
        layout = {1: "mono", 2: "stereo"}.get(channels) or (context.layout.name if context is not None else "stereo")
        encoder.layout = layout
        resampler = av.AudioResampler(format=encoder.format.name, layout=layout, rate=rate, frame_size=1024)
        self.audio[track.index] = _AudioRoute(track, encoder, resampler=resampler)
        name = "Opus" if target == "libopus" else "AAC"
        why = f"{container.suffix} cannot hold {track.codec}" if repairable else "its packets carry no timing"
        self.notes.append(f"{self.label}: audio track {track.index} ({track.codec}) re-encoded to {name}: {why}")

    def write(self, frame: VideoFrame, image: np.ndarray) -> None:
        import av

        try:
            self._write(frame, image)
        except (av.error.FFmpegError, OSError) as error:
            # A socket's OSError reaches here through PyAV's I/O callback (an SRT destination gone).
            self.broken = True
            raise SpgimError(f"cannot encode {self.label}: {error_reason(error)}") from None

    def _write(self, frame: VideoFrame, image: np.ndarray) -> None:
        import av

        if self.kind == "composite" and self.video.pix_fmt == "yuv420p":
            # OpenCV's RGB -> I420 (BT.601, limited range: what swscale writes too, within 3 levels, mean 0.15)
            # takes 0.75 ms at 1280x720 against swscale's 4.1 inside the encoder: a tenth of a live frame's CPU.
            planes = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)
            picture = av.VideoFrame.from_ndarray(planes.astype(np.uint8, copy=False), format="yuv420p")
        else:
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=_IMAGE_FORMAT[self.kind])
        pts = self._timestamp(frame)
        picture.pts, picture.time_base = pts, self.info.time_base
        self.last_pts = pts
        for packet in self.video.encode(picture):
            self.container.mux(packet)
        self.frames_written += 1

    def _timestamp(self, frame: VideoFrame) -> int:
        """The frame's timestamp in the output's time base: the input's, strictly rising, without long jumps."""
        if frame.pts is None:
            return self.frames_written if self.last_pts is None else self.last_pts + 1
        own = (
            frame.pts
            if frame.time_base == self.info.time_base
            else round(frame.pts * frame.time_base / self.info.time_base)
        )
        pts = own + self.shift
        if self.last_pts is None:
            return pts
        step = max(1, round(1 / ((self.info.rate or Fraction(25)) * self.info.time_base)))  # one frame, in ticks
        longest = round(LIVE_GAP_S / self.info.time_base) if self.destination.live else None
        if pts < self.last_pts - step or (longest is not None and pts > self.last_pts + longest):
            self.shift += self.last_pts + step - pts  # continue one frame on from here, and for what follows
            return self.last_pts + step
        return max(pts, self.last_pts + 1)  # encoders refuse repeated timestamps

    def write_audio(self, packet: AudioPacket) -> None:
        """Remux or re-encode one packet; a track the muxer still refuses is dropped, the video goes on."""
        import av

        route = self.audio.get(packet.track)
        if route is None:
            return
        try:
            route.write(self.container, packet.packet)
        except OSError as error:  # the destination's socket: the whole output is gone, not one track
            self.broken = True
            raise SpgimError(f"cannot send to {self.label}: {error_reason(error)}") from None
        except av.error.FFmpegError as error:
            del self.audio[packet.track]
            self.dropped_audio.append(route)
            when = packet.packet.pts
            seconds = f" at {float(when * packet.packet.time_base):.2f} s" if when is not None else ""
            self.notes.append(
                f"{self.label}: audio track {packet.track} stopped{seconds} ({error_reason(error)}); "
                "the video was finished without the rest of it"
            )

    def close(self, hurry: threading.Event | None = None) -> None:
        """Flush the encoders and write the trailer; the container is closed even when that fails."""
        import av

        if self.closed:
            return
        self.closed = True
        try:
            if not self.broken:  # muxing after a failed header write crashes FFmpeg (PyAV 18.1)
                self._flush()
        except (av.error.FFmpegError, OSError) as error:
            self.notes.append(
                f"{self.label}: the encoders could not be flushed ({error_reason(error)}); frames may miss"
            )
        try:
            self.container.close()
        except (av.error.FFmpegError, OSError) as error:
            raise SpgimError(f"cannot finish {self.label}: {error_reason(error)}") from None

    def _flush(self) -> None:
        for packet in self.video.encode(None):
            self.container.mux(packet)
        for route in [*self.audio.values(), *self.dropped_audio]:
            if route.retimer is not None and route.retimer.repaired and not route.retimer.from_samples:
                self.notes.append(
                    f"{self.label}: audio track {route.track.index}: {route.retimer.repaired} packets re-timed "
                    "(missing or out-of-order timestamps)"
                )
        for route in self.audio.values():
            route.flush(self.container)


class _AudioRoute:
    """How one input audio track reaches an output: remuxed through a retimer, or decoded and re-encoded.

    The route never changes the packet it is given (other outputs, on other threads, get the same one):
    it remuxes a copy, and decodes with a decoder of its own.
    """

    def __init__(
        self, track: AudioTrack, stream: Any, *, retimer: PacketRetimer | None = None, resampler: Any = None
    ) -> None:
        self.track, self.stream, self.retimer, self.resampler = track, stream, retimer, resampler
        self.decoder: Any = open_decoder(track) if resampler is not None else None
        self.samples = 0  # given to the encoder: its timestamps, whatever the input's say

    def write(self, container: Any, packet: Any) -> None:
        if self.retimer is not None:
            own = copy_packet(packet)
            self.retimer(own)
            own.stream = self.stream
            container.mux(own)
            return
        for decoded in self.decoder.decode(packet):
            self._encode(container, self.resampler.resample(decoded))

    def _encode(self, container: Any, chunks: list[Any]) -> None:
        for chunk in chunks:
            chunk.pts, chunk.time_base = self.samples, Fraction(1, chunk.sample_rate)
            self.samples += chunk.samples
            for encoded in self.stream.encode(chunk):
                container.mux(encoded)

    def flush(self, container: Any) -> None:
        if self.resampler is None:
            return
        for decoded in self.decoder.decode(None):  # what the decoder still holds (Opus, Vorbis: a frame's delay)
            self._encode(container, self.resampler.resample(decoded))
        self._encode(container, self.resampler.resample(None))
        for encoded in self.stream.encode(None):
            container.mux(encoded)


def open_output(
    path: str | Path,
    *,
    kind: str,
    info: VideoInfo,
    codec: str | None = None,
    quality: int | None = None,
    audio: bool = True,
    preset: str | None = None,
) -> Output:
    """Open ``path`` for ``kind`` ("composite", "alpha" or "foreground") frames of the input ``info``.

    Raises:
        SpgimError: an unwritable path, or a codec/extension that cannot hold ``kind``.
    """
    target = Path(path)
    chosen = choose_codec(target, kind, codec)
    if chosen == "png":
        return PngSequence(target, kind, info)
    if target.is_dir():
        raise SpgimError(f"{target} is a folder; give a file name, or use the folder for a PNG sequence")
    return VideoOutput(target, kind, chosen, info, quality, audio, preset)
