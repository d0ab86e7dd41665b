"""Where frames come from: files and network streams through PyAV, webcams through OpenCV, image folders.

``open_source(spec)`` returns a :class:`Source` whose ``items()`` yields decoded :class:`VideoFrame`
objects and, for files, the audio packets to pass through, in demux order. Bad input is one
:class:`SpgimError` line; corrupt packets in the middle of a file are skipped and counted.
"""

from __future__ import annotations

import abc
import contextlib
import glob
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError

from .audio import probe_audio_timing
from .frames import AudioPacket, AudioTrack, VideoFrame, VideoInfo
from .srt import SrtConnection
from .urls import error_reason, is_network, is_webcam, redact, scheme

Item = VideoFrame | AudioPacket
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LIVE_TIME_BASE = Fraction(1, 1000)  # live frames are stamped with the capture clock, in milliseconds


class Source(abc.ABC):
    """A stream of frames (and audio packets) with its :class:`VideoInfo`."""

    info: VideoInfo
    corrupt: int = 0  # packets or frames skipped because they could not be decoded
    reconnects: int = 0

    @abc.abstractmethod
    def items(self, stop: threading.Event) -> Iterator[Item]:
        """Frames and audio packets in demux order until the input ends or ``stop`` is set."""

    def close(self) -> None:
        """Release the input."""
        return None


class _LiveClock:
    """Millisecond timestamps from the capture clock, strictly increasing."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.last = -1

    def stamp(self, now: float) -> int:
        if self.start is None:
            self.start = now
        self.last = max(self.last + 1, round((now - self.start) * 1000))
        return self.last


class PyAVSource(Source):
    """A file or network stream decoded by FFmpeg through PyAV, with frame threading on."""

    def __init__(
        self,
        spec: str,
        *,
        live: bool,
        start: float | None = None,
        duration: float | None = None,
        open_timeout: float = 10.0,
        read_timeout: float = 5.0,
        clock: _LiveClock | None = None,
        stall_timeout: float | None = None,
        rtsp_transport: str | None = None,
    ) -> None:
        import av

        self.spec, self.live = spec, live
        self.stall_timeout = stall_timeout if live else None
        if self.stall_timeout is not None:
            read_timeout = min(read_timeout, self.stall_timeout)
        self.name = redact(spec)
        self.corrupt = 0
        self.clock = clock or _LiveClock()
        if not is_network(spec):
            path = Path(spec)
            if not path.exists():
                raise SpgimError(f"{spec}: no such file")
            if path.is_file() and path.stat().st_size == 0:
                raise SpgimError(f"{spec}: the file is empty")
        self.connection: SrtConnection | None = None
        options = demux_options(spec, live=live, rtsp_transport=rtsp_transport)
        try:
            # Tags are text in no known encoding (a damaged or foreign file): undecodable bytes become U+FFFD.
            if scheme(spec) == "srt":
                self.connection = SrtConnection(spec, open_timeout=open_timeout, io_timeout=read_timeout)
                target: Any = self.connection
                timeout, fmt = None, "mpegts"
            else:
                target, fmt = spec, None
                timeout = (open_timeout, read_timeout) if is_network(spec) else None
            self.container: Any = av.open(
                target, format=fmt, options=options, timeout=timeout, metadata_errors="replace"
            )
        except av.error.FFmpegError as error:
            self._close_connection()
            raise SpgimError(f"cannot open {self.name}: {error_reason(error, spec)}") from None
        except OSError as error:  # raised through PyAV by an SRT connection (silence, peer gone)
            self._close_connection()
            raise SpgimError(f"cannot open {self.name}: {error}") from None
        except BaseException:
            self._close_connection()
            raise
        try:
            self._setup(start, duration)
        except BaseException:
            self.close()
            raise

    def _setup(self, start: float | None, duration: float | None) -> None:
        import av

        if not self.container.streams.video:
            raise SpgimError(f"{self.name} has no video stream")
        self.video = self.container.streams.video[0]
        context = self.video.codec_context
        if context is None or not getattr(context, "name", None):
            raise SpgimError(f"{self.name}: its video codec is not supported by this FFmpeg build")
        self.video.thread_type = "AUTO"
        self.audio_streams = [] if self.live else list(self.container.streams.audio)
        base = self.video.time_base or Fraction(1, 90000)
        origin = float(self.video.start_time * base) if self.video.start_time is not None else 0.0
        # Live streams are cut by the pipeline's capture clock instead: their timestamps restart on reconnect.
        self.begin = origin + start if start and not self.live else None
        self.end = (self.begin or origin) + duration if duration and not self.live else None
        if self.begin is not None and not self.live:
            # When the input cannot seek, the frames before --start are decoded and skipped.
            with contextlib.suppress(av.error.FFmpegError):
                self.container.seek(int(self.begin / base), stream=self.video, backward=True)
        self._pending: deque[Item] = deque()
        self._stream = self._decode()
        first = None
        try:
            while first is None:
                item = next(self._stream)
                self._pending.append(item)
                if isinstance(item, VideoFrame):
                    first = item
        except StopIteration:
            pass
        if first is None:
            raise SpgimError(f"{self.name}: no video frame could be decoded ({_codec_name(self.video)})")
        timing = probe_audio_timing(self.spec, [s.index for s in self.audio_streams]) if self.audio_streams else {}
        tracks = tuple(
            AudioTrack(
                index=i,
                codec=s.codec_context.codec.canonical_name if s.codec_context else "unknown",
                sample_rate=s.codec_context.sample_rate if s.codec_context else 0,
                channels=s.codec_context.channels if s.codec_context else 0,
                time_base=s.time_base,
                stream=s,
                timing=timing.get(s.index),
            )
            for i, s in enumerate(self.audio_streams)
        )
        height, width = first.rgb.shape[:2]
        self.info = VideoInfo(
            width=width,
            height=height,
            time_base=LIVE_TIME_BASE if self.live else base,
            rate=self.video.average_rate or self.video.guessed_rate or None,
            rotation=self._rotation,
            codec=_codec_name(self.video),
            frames=0 if self.live or self.begin or self.end else int(self.video.frames or 0),
            duration=_duration(self.video, self.container),
            audio=tracks,
            live=self.live,
            description=self.name,
        )

    def _decode(self) -> Iterator[Item]:
        import av

        self._rotation = 0
        index = 0
        packets = self.container.demux(self.video, *self.audio_streams)
        last_frame = time.monotonic()
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                if self.live:
                    silent = time.monotonic() - last_frame
                    if self.stall_timeout is not None and silent >= self.stall_timeout:
                        raise SpgimError(f"{self.name}: stalled, no data for {silent:.1f} s") from None
                    raise SpgimError(f"{self.name}: {error_reason(error, self.spec)}") from None
                self.corrupt += 1  # a truncated or damaged tail: what was decoded so far is kept
                break
            except TimeoutError:  # an SRT connection's silence (see spgim.streaming.srt)
                raise SpgimError(f"{self.name}: stalled, no data for {time.monotonic() - last_frame:.1f} s") from None
            except OSError as error:  # an SRT connection lost
                raise SpgimError(f"{self.name}: {error}") from None
            # Connected but sending no picture (only audio, or undecodable video): as good as dropped.
            silent = time.monotonic() - last_frame
            if self.stall_timeout is not None and silent >= self.stall_timeout:
                raise SpgimError(f"{self.name}: stalled, no frame for {silent:.1f} s")
            if packet.stream.type == "audio":
                # An untimed packet is kept (the output re-times it) unless a time range must be cut.
                if packet.pts is None:
                    wanted = self.begin is None and self.end is None
                else:
                    wanted = self._in_range(packet.pts * packet.time_base)
                if packet.size and wanted:
                    yield AudioPacket(self.audio_streams.index(packet.stream), packet)
                continue
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                self.corrupt += 1
                continue
            for frame in decoded:
                seconds = None if frame.pts is None else float(frame.pts * frame.time_base)
                if seconds is not None and self.begin is not None and seconds < self.begin - 1e-6:
                    continue
                if seconds is not None and self.end is not None and seconds >= self.end - 1e-6:
                    return
                self._rotation = int(frame.rotation or 0) % 360
                now = last_frame = time.monotonic()
                yield VideoFrame(
                    index=index,
                    rgb=frame.to_ndarray(format="rgb24"),
                    pts=self.clock.stamp(now) if self.live else frame.pts,
                    time_base=LIVE_TIME_BASE if self.live else frame.time_base,
                    captured=now,
                )
                index += 1

    def _in_range(self, seconds: float) -> bool:
        if self.begin is not None and seconds < self.begin - 1e-6:
            return False
        return self.end is None or seconds < self.end - 1e-6

    def items(self, stop: threading.Event) -> Iterator[Item]:
        while self._pending:
            yield self._pending.popleft()
        for item in self._stream:
            if stop.is_set():
                return
            yield item

    def close(self) -> None:
        self.container.close()
        self._close_connection()

    def _close_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()


class ReconnectingSource(Source):
    """A network source that reopens with exponential back-off when the stream drops or ends.

    The first open must succeed; after that, up to ``max_reconnects`` attempts in a row are made
    (a frame received resets the count). Frames keep the output's size whatever the new stream's is.
    """

    def __init__(
        self, open_once: Callable[[_LiveClock], PyAVSource], *, max_reconnects: int, log: Callable[[str], None]
    ) -> None:
        self.open_once, self.max_reconnects, self.log = open_once, max_reconnects, log
        self.clock = _LiveClock()
        self.current: PyAVSource | None = open_once(self.clock)
        self.info = self.current.info
        self.name = self.current.name
        self.corrupt = 0
        self.reconnects = 0

    def items(self, stop: threading.Event) -> Iterator[Item]:
        attempts = 0
        index = 0
        while not stop.is_set():
            reason = "the stream ended"
            try:
                if self.current is None:
                    self.current = self.open_once(self.clock)
                for item in self.current.items(stop):
                    if isinstance(item, VideoFrame):
                        attempts = 0
                        item.index = index
                        index += 1
                        if item.rgb.shape[:2] != (self.info.height, self.info.width):
                            import cv2

                            item.rgb = cv2.resize(item.rgb, (self.info.width, self.info.height))
                    yield item
            except SpgimError as error:
                reason = str(error)
            if self.current is not None:
                self.corrupt += self.current.corrupt
                self.current.close()
                self.current = None
            if stop.is_set():
                return
            if attempts >= self.max_reconnects:
                raise SpgimError(
                    f"live source {self.name} dropped ({reason}); gave up after {attempts} reconnect attempts"
                )
            delay = min(8.0, 0.5 * 2**attempts)
            attempts += 1
            self.reconnects += 1
            self.log(f"live source dropped ({reason}); reconnect {attempts}/{self.max_reconnects} in {delay:.1f} s")
            if stop.wait(delay):
                return

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


class WebcamSource(Source):
    """A camera through OpenCV (the PyAV wheel has no v4l2); always live."""

    def __init__(self, index: int) -> None:
        import cv2

        self.capture = cv2.VideoCapture(index)
        if not self.capture.isOpened():
            raise SpgimError(f"webcam {index} cannot be opened")
        ok, first = self.capture.read()
        if not ok:
            self.capture.release()
            raise SpgimError(f"webcam {index} gives no frames")
        self.first: np.ndarray | None = first
        self.clock = _LiveClock()
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.info = VideoInfo(
            width=first.shape[1],
            height=first.shape[0],
            time_base=LIVE_TIME_BASE,
            rate=Fraction(fps).limit_denominator(1001) if fps and fps > 0 else None,
            codec="webcam",
            live=True,
            description=f"webcam {index}",
        )

    def items(self, stop: threading.Event) -> Iterator[Item]:
        import cv2

        index = 0
        while not stop.is_set():
            if self.first is not None:
                ok, image, self.first = True, self.first, None
            else:
                ok, image = self.capture.read()
            if not ok:
                return
            now = time.monotonic()
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            yield VideoFrame(index, rgb, self.clock.stamp(now), LIVE_TIME_BASE, now)
            index += 1

    def close(self) -> None:
        self.capture.release()


class ImageSequenceSource(Source):
    """A folder of images, a glob (``frames/*.png``) or a printf pattern (``frames/%05d.png``), in name order."""

    def __init__(self, spec: str, *, rate: Fraction = Fraction(25)) -> None:
        self.paths = image_sequence(spec)
        if not self.paths:
            raise SpgimError(f"{spec}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
        first = _read_image(self.paths[0])
        self.info = VideoInfo(
            width=first.shape[1],
            height=first.shape[0],
            time_base=1 / rate,
            rate=rate,
            codec="images",
            frames=len(self.paths),
            duration=float(len(self.paths) / rate),
            description=spec,
        )

    def items(self, stop: threading.Event) -> Iterator[Item]:
        import cv2

        for index, path in enumerate(self.paths):
            if stop.is_set():
                return
            rgb = _read_image(path)
            if rgb.shape[:2] != (self.info.height, self.info.width):
                rgb = cv2.resize(rgb, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)
            yield VideoFrame(index, rgb, index, self.info.time_base, time.monotonic())


def image_sequence(spec: str) -> list[Path]:
    """The image files an image-sequence spec names, sorted; empty when it names none."""
    if "%" in spec:
        pattern = Path(spec)
        found = []
        for index in range(100_000):
            try:
                candidate = Path(str(pattern) % index)
            except (TypeError, ValueError):
                raise SpgimError(f"{spec}: not a printf pattern such as frames/%05d.png") from None
            if candidate.is_file():
                found.append(candidate)
            elif found or index > 1:
                break
        return found
    if any(char in spec for char in "*?["):
        return sorted(Path(p) for p in glob.glob(spec) if p.lower().endswith(IMAGE_SUFFIXES))
    folder = Path(spec)
    if folder.is_dir():
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return []


def _read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SpgimError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _codec_name(stream: Any) -> str:
    context = stream.codec_context
    return context.codec.canonical_name if context is not None and context.name else "unknown codec"


def _duration(video: Any, container: Any) -> float | None:
    if video.duration is not None and video.time_base:
        return float(video.duration * video.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


RTSP_TRANSPORTS = ("udp", "tcp")


def demux_options(spec: str, *, live: bool, rtsp_transport: str | None = None) -> dict[str, str]:
    """FFmpeg demuxer options for ``spec``: the RTSP transport, and low delay for live network sources.

    Live: no input buffering, and probing stops after 256 KiB or half a second of stream instead of 5 MB /
    5 s: enough for the one video stream a live source is read for, and start-up is what a viewer waits.
    """
    options: dict[str, str] = {}
    kind = scheme(spec)
    if rtsp_transport is not None:
        if rtsp_transport not in RTSP_TRANSPORTS:
            raise SpgimError(f"unknown RTSP transport {rtsp_transport!r}; choose {' or '.join(RTSP_TRANSPORTS)}")
        if kind in ("rtsp", "rtsps"):
            options["rtsp_transport"] = rtsp_transport
    if live and is_network(spec):
        options.update(fflags="nobuffer", probesize="262144", analyzeduration="500000")
    return options


def open_source(
    spec: str,
    *,
    live: bool | None = None,
    start: float | None = None,
    duration: float | None = None,
    max_reconnects: int = 5,
    stall_timeout: float = 2.0,
    rtsp_transport: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Source:
    """The source ``spec`` names: a webcam index, a network URL, an image sequence, or a media file.

    ``live`` defaults to on for network and webcam sources. ``start``/``duration`` in seconds
    select part of a recorded file. A live network source that delivers no frame for ``stall_timeout``
    seconds counts as dropped and is reopened (up to ``max_reconnects`` attempts in a row). ``rtsp_transport``
    ("udp" or "tcp") chooses how RTP reaches an ``rtsp://`` source (FFmpeg's default: UDP, then TCP if no UDP
    packet arrives).
    """
    demux_options(spec, live=False, rtsp_transport=rtsp_transport)  # a bad transport fails before any connection
    if is_webcam(spec):
        return WebcamSource(int(spec))
    if is_network(spec):
        if live is False:
            return PyAVSource(spec, live=False, start=start, duration=duration, rtsp_transport=rtsp_transport)
        return ReconnectingSource(
            lambda clock: PyAVSource(
                spec,
                live=True,
                duration=duration,
                clock=clock,
                stall_timeout=stall_timeout,
                rtsp_transport=rtsp_transport,
            ),
            max_reconnects=max_reconnects,
            log=log,
        )
    if Path(spec).is_dir() or any(char in spec for char in "*?%"):
        return ImageSequenceSource(spec)
    return PyAVSource(spec, live=bool(live), start=start, duration=duration)
