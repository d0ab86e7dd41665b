"""The matted stream published live: ``rtmp://`` (FLV), ``rtsp://`` (ANNOUNCE/RECORD to a server),
``srt://`` and ``udp://`` (MPEG-TS), H.264 tuned for zero latency, audio passed through or re-encoded to AAC.

A :class:`PublishedStream` encodes and sends in its own thread behind a short queue, so a slow or
lost destination never holds up the job's other outputs: while it is down, frames for it are dropped
and counted, and it is reopened with the same back-off as a live source (0.5 s doubling to 8 s,
``max_reconnects`` attempts in a row). A destination that refuses from the start is one line per
attempt; when it gives up, the job goes on with its other outputs (or stops, if it had no other).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError

from .frames import AudioPacket, VideoFrame, VideoInfo
from .outputs import STREAM_FORMATS, Destination, Output, VideoOutput
from .srt import SrtConnection
from .urls import error_reason, redact, scheme, scrub

_MUXERS = {".flv": "flv", ".rtsp": "rtsp", ".ts": "mpegts"}
_END = object()
QUEUE_ITEMS = 48  # frames and audio packets, about half a second: beyond that the destination is behind


def is_destination(target: str | Path) -> bool:
    """True when ``target`` is a URL spgim publishes to (rtmp, rtsp, srt, udp, tcp)."""
    return scheme(str(target)) in STREAM_FORMATS


class PublishedStream(Output):
    """``kind`` frames ("composite" or "alpha") published to ``url``, reconnecting when the destination drops.

    Args:
        required: the job has no other output, so giving up on this one is an error that stops it.
    """

    def __init__(
        self,
        url: str,
        kind: str,
        info: VideoInfo,
        *,
        quality: int | None = None,
        preset: str | None = None,
        rtsp_transport: str | None = None,
        max_reconnects: int = 5,
        required: bool = False,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        if kind == "foreground":
            raise SpgimError(f"{redact(url)}: a published H.264 stream has no alpha plane; publish the composite")
        self.url, self.kind, self.codec, self.info = url, kind, "h264", info
        self.path = Path(redact(url))
        self.label = redact(url)
        self.rtsp_transport = rtsp_transport
        self.connection: SrtConnection | None = None
        self.destination = Destination(self.label, STREAM_FORMATS[scheme(url)], self._open_stream, live=True)
        self.quality, self.preset = quality, preset
        self.max_reconnects, self.required = max_reconnects, required
        self.log = lambda message: log(scrub(message, url))
        self.last_error = ""
        self.notes: list[str] = []
        self.frames_written = 0  # frames sent to the destination
        self.lost = 0  # frames dropped for it: queue full, or the destination down
        self.outages = 0
        self.failed: str | None = None
        self.current: VideoOutput | None = None
        self.queue: queue.Queue[Any] = queue.Queue(QUEUE_ITEMS)
        self._open_first()
        self.thread = threading.Thread(target=self._run, name="spgim-publish", daemon=True)
        self.thread.start()

    def _open_first(self) -> None:
        """Connect before the job starts; a refusal is not fatal here, the thread retries with back-off."""
        self.attempts, self.next_try = 0, 0.0
        self._connect()

    def _connect(self) -> None:
        try:
            self.current = self._start()
            if self.attempts or self.outages:
                self.log(f"publishing to {self.label} again")
            self.attempts = 0
        except SpgimError as error:
            self.last_error = scrub(str(error), self.url)
            self.attempts += 1
            if self.attempts > self.max_reconnects:
                self.failed = f"{self.last_error}; gave up after {self.attempts - 1} attempts"
                self.log(self.failed)
                self.notes.append(self.failed)
                return
            delay = min(8.0, 0.5 * 2 ** (self.attempts - 1))
            self.next_try = time.monotonic() + delay
            self.log(f"{error}; retry {self.attempts}/{self.max_reconnects} in {delay:.1f} s")

    def _open_stream(self, open_timeout: float = 5.0, io_timeout: float = 5.0) -> Any:
        """PyAV's output container for the URL, connected (RTMP, SRT) or ready to connect (RTSP, UDP)."""
        import av

        url = self.url
        muxer = _MUXERS[self.destination.rules.suffix]
        # Each packet is sent when muxed: a live viewer should not wait for a 32 KiB buffer to fill.
        options = {"flush_packets": "1"}
        if muxer == "rtsp" and self.rtsp_transport is not None:
            options["rtsp_transport"] = self.rtsp_transport
        if scheme(url) == "udp" and "pkt_size" not in url:
            url += ("&" if "?" in url else "?") + "pkt_size=1316"  # seven TS packets: one datagram under the MTU
        try:
            if scheme(url) == "srt":
                self.connection = SrtConnection(url, open_timeout=open_timeout, io_timeout=io_timeout, sending=True)
                return av.open(self.connection, "w", format=muxer, container_options=options)
            timeout = (open_timeout, io_timeout)
            return av.open(url, "w", format=muxer, container_options=options, timeout=timeout)
        except (av.error.FFmpegError, OSError) as error:
            self._close_connection()
            raise SpgimError(f"cannot publish to {self.label}: {error_reason(error, self.url)}") from None

    def _close_connection(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def _start(self) -> VideoOutput:
        """A connected output: the header written, so that an RTSP server's refusal shows here, not mid-frame."""
        import av

        output = VideoOutput(self.path, self.kind, "h264", self.info, self.quality, True, self.preset, self.destination)
        try:
            output.container.start_encoding()
        except (av.error.FFmpegError, OSError) as error:
            self._discard(output)
            raise SpgimError(f"cannot publish to {self.label}: {error_reason(error, self.url)}") from None
        return output

    def write(self, frame: VideoFrame, image: np.ndarray) -> None:
        """Queue one frame; the oldest queued frame is dropped when the destination is behind."""
        if self.failed is not None and self.required:
            raise SpgimError(self.failed)
        self._put((frame, image))

    def write_audio(self, packet: AudioPacket) -> None:
        """Queue one audio packet."""
        self._put(packet)

    def _put(self, item: Any) -> None:
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    dropped = self.queue.get_nowait()
                    if isinstance(dropped, tuple):
                        self.lost += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while (item := self.queue.get()) is not _END:
            if self.current is None and self.failed is None and time.monotonic() >= self.next_try:
                self._connect()
            if self.current is None:
                self.lost += isinstance(item, tuple)
                continue
            try:
                if isinstance(item, tuple):
                    self.current.write(*item)
                    self.frames_written += 1
                else:
                    self.current.write_audio(item)
            except SpgimError as error:
                self.outages += 1
                self.lost += isinstance(item, tuple)
                self._drop()
                self.attempts, self.next_try = 1, time.monotonic() + 0.5
                self.log(f"publishing to {self.label} dropped ({error}); reconnect in 0.5 s")

    def _drop(self) -> None:
        """Close the current connection, whatever state it is in."""
        current, self.current = self.current, None
        if current is not None:
            self._discard(current)

    def _discard(self, output: VideoOutput) -> None:
        with contextlib.suppress(Exception):  # a broken connection cannot always be finalised; nothing is kept
            output.close()
        self._close_connection()

    def close(self) -> None:
        """Send what is queued, finish the stream and report what was published."""
        if not self.thread.is_alive():
            return
        self._put(_END)
        self.thread.join(15.0)
        if self.current is not None:
            self.notes.extend(self.current.notes)
        self._drop()
        summary = f"{self.label}: {self.frames_written} frames published"
        if self.lost or self.outages:
            summary += f", {self.lost} lost, {self.outages} outages"
        if not self.frames_written and self.last_error:
            summary += f" (never connected: {self.last_error})"
        self.notes.append(summary)
