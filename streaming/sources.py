"""Where frames come from: files and network streams through PyAV, webcams through OpenCV, image folders
(what is known of a live network source before a frame, its start-up budget and demuxer options: :mod:`.network`).

``open_source(spec)`` returns a :class:`Source` whose ``items()`` yields decoded :class:`VideoFrame`
objects and, for files, the audio packets to pass through, in demux order. Bad input is one
:class:`SpgimError` line; corrupt packets in the middle of a file are skipped and counted.

A live network source (:class:`ReconnectingSource`) is opened within a start-up budget
(:data:`STARTUP_TIMEOUT_S`): a player that joins a stream between keyframes decodes nothing until the
next one. A drop (an error, the end of the stream, a stall) is reopened with back-off, and so is a
source that is not up yet at start; one that can never work (no such host, a malformed URL, no video)
is one line at once.
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
from .network import (
    HELD_SCHEMES,
    STARTUP_TIMEOUT_S,
    SourceDownError,
    check_host,
    demux_options,
    is_fatal_open_error,
)
from .srt import SrtConnection, SrtUnreachableError
from .urls import error_reason, is_network, is_webcam, redact, scheme

Item = VideoFrame | AudioPacket
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LIVE_TIME_BASE = Fraction(1, 1000)  # live frames are stamped with the capture clock, in milliseconds
# Audio demuxed before a file's first video frame is held for the outputs: at most this much. 32 MiB is
# over half an hour of 128 kb/s AAC, three minutes of 48 kHz stereo 16-bit PCM: far beyond any real
# file's late video start, so a file that reaches it has video that does not decode.
AUDIO_AHEAD_BYTES = 32 * 2**20


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
    """A file or network stream decoded by FFmpeg through PyAV, with frame threading on.

    Args:
        spec: a path or a network URL.
        live: stamp frames with the capture clock and watch the stream for stalls (network sources).
        start, duration: the part of a recorded input to decode, in seconds.
        open_timeout: connecting: a recorded input's whole open; a live ``srt://`` source's handshake (the
            rest of a live open is within ``startup_timeout``).
        read_timeout: one read of a recorded network input.
        clock: the capture clock live frames are stamped with (shared across a live source's reconnects).
        stall_timeout: live: no picture for this long, while packets come or the connection is silent, is a
            stall (:class:`SourceDownError`); a connection in :data:`HELD_SCHEMES` is waited on instead while
            silent, up to ``startup_timeout``.
        startup_timeout: live: the budget from the start of the open to the first picture (default
            :data:`STARTUP_TIMEOUT_S`); it starts again when data comes back after a held connection's silence.
        rtsp_transport: "udp" or "tcp" for an ``rtsp://`` source.

    Raises:
        SourceDownError: a live source that is not reachable or not delivering now.
        SpgimError: anything else: a missing or empty file, no video, an unsupported codec, a bad URL.
    """

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
        startup_timeout: float | None = None,
        rtsp_transport: str | None = None,
    ) -> None:
        import av

        self.started = time.monotonic()
        self.spec, self.live = spec, live
        self.name = redact(spec)
        self.corrupt = 0
        self.clock = clock or _LiveClock()
        self.on_resume: Callable[[float], None] | None = None  # a held connection's picture after a stall
        self.container: Any = None
        self.connection: SrtConnection | None = None
        self.stall_timeout = stall_timeout if live else None
        self.startup_timeout = (startup_timeout or STARTUP_TIMEOUT_S) if live else None
        self.held = live and scheme(spec) in HELD_SCHEMES
        if not is_network(spec):
            path = Path(spec)
            if not path.exists():
                raise SpgimError(f"{spec}: no such file")
            if path.is_file() and path.stat().st_size == 0:
                raise SpgimError(f"{spec}: the file is empty")
        options = demux_options(spec, live=live, rtsp_transport=rtsp_transport)
        if self.startup_timeout is not None:
            check_host(spec, self.name)
            open_timeout, connect_timeout = self.startup_timeout, min(open_timeout, self.startup_timeout)
            if self.held:
                read_timeout = self.startup_timeout  # a silent publisher is waited for on the open connection
            elif self.stall_timeout is not None:
                read_timeout = min(read_timeout, self.stall_timeout)
        else:
            connect_timeout = open_timeout
        try:
            # Tags are text in no known encoding (a damaged or foreign file): undecodable bytes become U+FFFD.
            if scheme(spec) == "srt":
                self.connection = SrtConnection(spec, open_timeout=connect_timeout, io_timeout=read_timeout)
                target: Any = self.connection
                timeout, fmt = None, "mpegts"
            else:
                target, fmt = spec, None
                timeout = (open_timeout, read_timeout) if is_network(spec) else None
            self.container = av.open(target, format=fmt, options=options, timeout=timeout, metadata_errors="replace")
        except av.error.FFmpegError as error:
            self._close_connection()
            fatal = is_fatal_open_error(error) or not live
            kind = SpgimError if fatal else SourceDownError
            raise kind(f"cannot open {self.name}: {error_reason(error, spec)}") from None
        except SrtUnreachableError as error:
            raise SourceDownError(str(error)) from None
        except OSError as error:  # raised through PyAV by an SRT connection (silence, peer gone)
            self._close_connection()
            raise SourceDownError(f"cannot open {self.name}: {error}") from None
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
        first = self._first_frame()
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

    def _first_frame(self) -> VideoFrame:
        """Decode up to the first video frame, keeping what comes before it (audio) for :meth:`items`."""
        held = 0  # bytes of audio before the first frame
        for item in self._stream:
            self._pending.append(item)
            if isinstance(item, VideoFrame):
                return item
            held += item.packet.size
            if held > AUDIO_AHEAD_BYTES:
                # Holding more would grow without bound on a file whose video never decodes.
                packet = item.packet
                seconds = "" if packet.pts is None else f", {float(packet.pts * packet.time_base):.0f} s"
                raise SpgimError(
                    f"{self.name}: no video frame within its first {AUDIO_AHEAD_BYTES >> 20} MiB of audio{seconds}: "
                    f"its video ({_codec_name(self.video)}) starts later than spgim holds audio for, "
                    "or cannot be decoded"
                )
        kind = SourceDownError if self.live else SpgimError  # a live stream that ended at once may come back
        raise kind(f"{self.name}: no video frame could be decoded ({_codec_name(self.video)})")

    def _decode(self) -> Iterator[Item]:
        import av

        self._rotation = 0
        index = 0
        packets = self.container.demux(self.video, *self.audio_streams)
        # Live: a picture is due within the start-up budget of the open (a player that joins between two
        # keyframes waits for the next), or of data coming back after a held connection's silence (the
        # publisher restarted); after that, within the stall timeout of the last one.
        waiting_since: float | None = self.started
        last_frame = last_data = time.monotonic()
        silent_gap = False  # a held connection was silent for a stall timeout since the last picture
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as error:
                if self.live:
                    # PyAV's read timeout ("exit requested"); the demuxer may first return what it had
                    # assembled, so the silence is measured from the last picture, not the last packet.
                    if isinstance(error, av.error.ExitError):
                        raise SourceDownError(self._stalled(last_frame)) from None
                    raise SourceDownError(f"{self.name}: {error_reason(error, self.spec)}") from None
                self.corrupt += 1  # a truncated or damaged tail: what was decoded so far is kept
                break
            except TimeoutError:  # an SRT connection's silence (see spgim.streaming.srt)
                raise SourceDownError(self._stalled(last_frame)) from None
            except OSError as error:  # an SRT connection lost
                raise SourceDownError(f"{self.name}: {error}") from None
            now = time.monotonic()
            if self.held and self.stall_timeout is not None and now - last_data >= self.stall_timeout:
                # (Elsewhere the read times out first; a late packet there may only let the decoder's
                # threads give up a picture held from before the silence: not a publisher back.)
                waiting_since, silent_gap = now, index > 0
            last_data = now
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
                # A live stream joined between keyframes is undecodable until the next: not damage.
                self.corrupt += 0 if self.live and index == 0 else 1
                decoded = []
            for frame in decoded:
                seconds = None if frame.pts is None else float(frame.pts * frame.time_base)
                if seconds is not None and self.begin is not None and seconds < self.begin - 1e-6:
                    continue
                if seconds is not None and self.end is not None and seconds >= self.end - 1e-6:
                    return
                self._rotation = int(frame.rotation or 0) % 360
                now = time.monotonic()
                if silent_gap and self.on_resume is not None:
                    self.on_resume(now - last_frame)
                waiting_since, silent_gap, last_frame = None, False, now
                yield VideoFrame(
                    index=index,
                    rgb=frame.to_ndarray(format="rgb24"),
                    pts=self.clock.stamp(now) if self.live else frame.pts,
                    time_base=LIVE_TIME_BASE if self.live else frame.time_base,
                    captured=now,
                )
                index += 1
            self._check_stall(waiting_since, last_frame)

    def _check_stall(self, waiting_since: float | None, last_frame: float) -> None:
        """Raise :class:`SourceDownError` when a live source's picture is overdue (connected, but sending none)."""
        if self.stall_timeout is None or self.startup_timeout is None:
            return
        now = time.monotonic()
        if waiting_since is not None and now - waiting_since >= self.startup_timeout:
            raise SourceDownError(
                f"{self.name}: no picture within {self.startup_timeout:.0f} s "
                "(its keyframes are further apart, or none can be decoded)"
            )
        if waiting_since is None and now - last_frame >= self.stall_timeout:
            raise SourceDownError(self._stalled(last_frame))

    def _stalled(self, last_frame: float) -> str:
        return f"{self.name}: stalled, no frame for {time.monotonic() - last_frame:.1f} s"

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
        """Close the container and the SRT connection under it, each once (safe twice)."""
        container, self.container = self.container, None
        try:
            if container is not None:
                container.close()
        finally:
            self._close_connection()

    def _close_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


class ReconnectingSource(Source):
    """A live network source, opened and reopened with exponential back-off (0.5 s doubling to 8 s).

    The first open happens here, so that :attr:`info` is known before the job starts, and it is retried
    like a drop when the source is down (:class:`SourceDownError`: refused, not published yet, silent); any
    other failure (no such host, a malformed URL, no video, refused credentials) is raised at once. After
    that, a drop (an error, the end of the stream, a stall) is reopened whatever the reason. Up to
    ``max_reconnects`` attempts in a row are made (a frame received resets the count). A held connection
    (:data:`HELD_SCHEMES`) whose pictures come back after a stall counts as one reconnect. Frames keep the
    first stream's size whatever a new stream's is.
    """

    def __init__(
        self,
        open_once: Callable[[_LiveClock], PyAVSource],
        *,
        max_reconnects: int,
        log: Callable[[str], None],
    ) -> None:
        self.open_once, self.max_reconnects, self.log = open_once, max_reconnects, log
        self.clock = _LiveClock()
        self.corrupt = 0
        self.reconnects = 0
        self.current: PyAVSource | None = self._connect(threading.Event(), dropped=None)
        assert self.current is not None  # only a stop request ends _connect without a source
        self.info = self.current.info

    def _connect(self, stop: threading.Event, *, dropped: str | None) -> PyAVSource | None:
        """A new connection, after ``dropped`` (why the last one was lost; None: the first open).

        Returns None when ``stop`` is set during a back-off.

        Raises:
            SpgimError: ``max_reconnects`` attempts failed in a row, or the first open failed for good.
        """
        reason, attempts = dropped, 0
        while True:
            if reason is not None:
                what = "is not up" if dropped is None else "dropped"
                if attempts >= self.max_reconnects:
                    # (The reason names the source: PyAVSource's messages start with its redacted URL.)
                    raise SpgimError(f"live source {what} ({reason}); gave up after {attempts} reconnect attempts")
                delay = min(8.0, 0.5 * 2**attempts)
                attempts += 1
                self.reconnects += 1
                self.log(f"live source {what} ({reason}); reconnect {attempts}/{self.max_reconnects} in {delay:.1f} s")
                if stop.wait(delay):
                    return None
            try:
                source = self.open_once(self.clock)
            except SourceDownError as error:
                reason = str(error)
                continue
            except SpgimError as error:
                if dropped is None:
                    raise
                reason = str(error)  # a stream that worked before: whatever went wrong may pass
                continue
            source.on_resume = self._resumed
            return source

    def _resumed(self, gap: float) -> None:
        self.reconnects += 1
        self.log(f"live source stalled for {gap:.1f} s and came back on the connection held open (a reconnect)")

    def items(self, stop: threading.Event) -> Iterator[Item]:
        index = 0
        while self.current is not None:
            reason = "the stream ended"
            try:
                for item in self.current.items(stop):
                    if isinstance(item, VideoFrame):
                        item.index = index
                        index += 1
                        if item.rgb.shape[:2] != (self.info.height, self.info.width):
                            import cv2

                            item.rgb = cv2.resize(item.rgb, (self.info.width, self.info.height))
                    yield item
            except SpgimError as error:
                reason = str(error)
            self._close_current()
            if stop.is_set():
                return
            self.current = self._connect(stop, dropped=reason)

    def _close_current(self) -> None:
        current, self.current = self.current, None
        if current is not None:
            self.corrupt += current.corrupt
            current.close()

    def close(self) -> None:
        self._close_current()


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


def open_source(
    spec: str,
    *,
    live: bool | None = None,
    start: float | None = None,
    duration: float | None = None,
    max_reconnects: int = 5,
    stall_timeout: float = 2.0,
    startup_timeout: float = STARTUP_TIMEOUT_S,
    rtsp_transport: str | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> Source:
    """The source ``spec`` names: a webcam index, a network URL, an image sequence, or a media file.

    ``live`` defaults to on for network and webcam sources. ``start``/``duration`` in seconds
    select part of a recorded file. A live network source must deliver its first picture within
    ``startup_timeout`` seconds of an open (a player that joins between keyframes waits for the next);
    after that, one that delivers no frame for ``stall_timeout`` seconds counts as dropped (a silent
    connection that servers hold through a publisher's absence, RTMP and SRT, is waited on up to
    ``startup_timeout`` instead). A drop, and a source that is not up yet at start, is reopened with
    back-off, up to ``max_reconnects`` attempts in a row. ``rtsp_transport`` ("udp" or "tcp") chooses how
    RTP reaches an ``rtsp://`` source (FFmpeg's default: UDP, then TCP if no UDP packet arrives).
    """
    demux_options(spec, live=False, rtsp_transport=rtsp_transport)  # a bad transport fails before any connection
    for label, seconds in (("stall timeout", stall_timeout), ("start-up timeout", startup_timeout)):
        if not seconds > 0:
            raise SpgimError(f"the {label} must be a positive number of seconds, got {seconds}")
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
                startup_timeout=startup_timeout,
                rtsp_transport=rtsp_transport,
            ),
            max_reconnects=max_reconnects,
            log=log,
        )
    if Path(spec).is_dir() or any(char in spec for char in "*?%"):
        return ImageSequenceSource(spec)
    return PyAVSource(spec, live=bool(live), start=start, duration=duration)
