"""The live preview page of a matting job (``spgim matte ... --preview [HOST:]PORT``).

:class:`PreviewServer` serves, with the standard library's threading HTTP server:

- ``/``: the page (:data:`spgim.streaming.preview_page.PAGE`): the composite beside the input and the alpha,
  and the job's figures;
- ``/composite.mjpg``, ``/input.mjpg``, ``/alpha.mjpg``: each picture as MJPEG (``multipart/x-mixed-replace``),
  upright, at most :data:`PICTURE_SIDES` pixels on its longer side and :data:`PICTURES_PER_S` pictures a second
  (the composite larger and more often than the two pictures beside it);
- ``/stats``: the job's figures as JSON, :meth:`spgim.streaming.job.MatteResult.figures` of the job so far (the
  numbers its summary line prints).

The job's writer thread hands each written frame to :meth:`PreviewServer.show`, which keeps a reference to it as
the latest and wakes the picture threads: nothing is encoded while no page is open. Each open picture has its
own thread that takes the newest frame once the client has taken the previous one, encodes it as JPEG (once per
frame and picture, shared by the clients) and sends it, so a slow or stalled browser drops preview frames in its
own thread and never holds up the job. A client that takes nothing for :data:`SEND_TIMEOUT_S` is dropped.
:meth:`PreviewServer.close` stops listening and cuts every connection: an open page never keeps a job alive.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

from spgim.errors import SpgimError

from .composite import GREEN, alpha_u8, composite, upright
from .frames import VideoFrame
from .options import PreviewAddress
from .preview_page import PAGE

PICTURES = ("composite", "input", "alpha")
# Each picture's longer side on the page, in pixels (smaller frames are sent as they are): the page shows the
# composite large, the input and the alpha beside it at about half its width.
PICTURE_SIDES = {"composite": 640, "input": 400, "alpha": 400}
JPEG_QUALITY = 80
# The most each picture is sent a second, whatever the job's rate: the composite at a display's rate, the two
# beside it at half that (each JPEG costs the job's CPUs; the browser's decoding too, on the same machine).
PICTURES_PER_S = {"composite": 30.0, "input": 15.0, "alpha": 15.0}
SEND_TIMEOUT_S = 30.0  # a client that takes no data for this long is dropped
WAIT_S = 0.5  # how often a picture thread looks whether the server is closing
BOUNDARY = b"spgim-frame"


@dataclass(frozen=True)
class _Shown:
    """The latest frame handed to the page, numbered so that each picture thread sends a frame once."""

    number: int
    frame: VideoFrame
    images: dict[str, np.ndarray]


def picture(name: str, frame: VideoFrame, images: Mapping[str, np.ndarray]) -> np.ndarray:
    """The picture ``name`` (one of :data:`PICTURES`) of a written frame, in the stored orientation.

    ``images`` are what the job wrote of the frame; what it did not write is made from the frame and its alpha
    (the alpha as greyscale, the composite over green).
    """
    if name == "input":
        return frame.rgb
    written = images.get(name)
    if written is not None:
        return written
    assert frame.alpha is not None, "only matted frames are shown"
    if name == "alpha":
        return alpha_u8(frame.alpha)
    return composite(frame.rgb, frame.alpha, np.full_like(frame.rgb, GREEN))


def encode_jpeg(image: np.ndarray, rotation: int = 0, side: int = 640, quality: int = JPEG_QUALITY) -> bytes:
    """``image`` (uint8 RGB or greyscale, stored orientation) as a JPEG, upright and at most ``side`` pixels on its
    longer side."""
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    image = upright(image, rotation)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SpgimError(f"the preview could not encode a {width}x{height} picture as JPEG")
    return data.tobytes()


class PreviewServer:
    """The preview page of one job, listening on ``address`` from construction until :meth:`close`.

    Args:
        address: where to listen; port 0 binds any free port (read :attr:`port` or :attr:`url`).

    Raises:
        SpgimError: the host is no address of this machine, or the port is in use or not allowed.

    Call :meth:`follow` once the job runs, :meth:`show` with each written frame, and :meth:`close` when the job
    ends (or use it as a context manager).
    """

    def __init__(self, address: PreviewAddress) -> None:
        self.address = address
        self._rotation = 0
        self._figures: Callable[[], Mapping[str, Any]] | None = None
        self._latest: _Shown | None = None
        self._shown = threading.Condition()
        self._closing = threading.Event()
        self._encoded: dict[str, tuple[int, bytes]] = {}  # picture -> (frame number, JPEG), shared by its clients
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._http = _bind(address, self)
        self.port: int = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": WAIT_S}, name="spgim-preview", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's address, with the port bound."""
        return self.address.url(self.port)

    def follow(self, figures: Callable[[], Mapping[str, Any]], *, rotation: int = 0) -> None:
        """Serve ``figures()`` at ``/stats`` from now on (until then the page says the job is starting); frames
        shown are turned upright by ``rotation`` (the input's display rotation)."""
        self._rotation = rotation
        self._figures = figures

    def show(self, frame: VideoFrame, images: dict[str, np.ndarray]) -> None:
        """Keep ``frame`` and what was written of it (``images``, by kind) as the latest; encodes nothing.

        Called by the job's writer thread with every frame written; the arrays must not change afterwards.
        """
        with self._shown:
            number = 1 if self._latest is None else self._latest.number + 1
            self._latest = _Shown(number, frame, images)
            self._shown.notify_all()

    def stats(self) -> dict[str, Any]:
        """What ``/stats`` answers: ``state`` (``starting`` or ``running``) and, running, the job's ``figures``."""
        figures = self._figures
        if figures is None:
            return {"state": "starting"}
        return {"state": "running", "figures": dict(figures())}

    def pictures(self, name: str) -> Iterator[bytes]:
        """The picture ``name`` of the newest frame as a JPEG, each time a newer one is shown, at most
        its :data:`PICTURES_PER_S` a second, until :meth:`close`.

        Frames shown while the previous JPEG was being sent, or sooner than that rate, are skipped for the newest.
        """
        sent, due = 0, 0.0
        while not self._closing.wait(max(0.0, due - time.monotonic())):
            with self._shown:
                self._shown.wait_for(self._new_since(sent), WAIT_S)
                latest = self._latest
            if latest is None or latest.number == sent or self._closing.is_set():
                continue
            sent, due = latest.number, time.monotonic() + 1.0 / PICTURES_PER_S[name]
            yield self._jpeg(name, latest)

    def close(self) -> None:
        """Stop listening, end every connection and forget the latest frame; safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        with self._shown:
            self._shown.notify_all()
        self._http.shutdown()
        self._http.server_close()
        with self._connections_lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):  # a send blocked on a stalled client returns
                    connection.shutdown(socket.SHUT_RDWR)
        self._latest = None
        self._encoded.clear()

    def __enter__(self) -> PreviewServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _new_since(self, sent: int) -> Callable[[], bool]:
        return lambda: self._closing.is_set() or (self._latest is not None and self._latest.number != sent)

    def _jpeg(self, name: str, shown: _Shown) -> bytes:
        cached = self._encoded.get(name)
        if cached is not None and cached[0] == shown.number:
            return cached[1]
        data = encode_jpeg(picture(name, shown.frame, shown.images), self._rotation, PICTURE_SIDES[name])
        self._encoded[name] = (shown.number, data)
        return data

    def _connected(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _HTTPServer(ThreadingHTTPServer):
    """The standard threading HTTP server: a thread per connection, none of them waited for on close."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, preview: PreviewServer) -> None:
        self.address_family = family
        self.preview = preview
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's looks the host's name up in DNS, which can hang on a machine without a resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # a client gone, or cut by close(): nothing to report
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """One connection: the page, the figures, or one picture's MJPEG stream."""

    server: _HTTPServer
    timeout = SEND_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        self.server.preview._connected(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.preview._connected(self.connection, False)

    def do_GET(self) -> None:
        """Answer ``/``, ``/stats`` and the pictures' streams."""
        path = urlsplit(self.path).path
        name = path.removeprefix("/").removesuffix(".mjpg")
        if path == "/":
            self._send("text/html; charset=utf-8", PAGE.encode())
        elif path == "/stats":
            self._send("application/json", json.dumps(self.server.preview.stats()).encode())
        elif path.endswith(".mjpg") and name in PICTURES:
            self._stream(name)
        else:
            self.send_error(404, "no such page")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the job's stderr is its own."""

    def _send(self, kind: str, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, name: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        for jpeg in self.server.preview.pictures(name):
            head = b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % (BOUNDARY, len(jpeg))
            self.wfile.write(head + jpeg + b"\r\n")


def _bind(address: PreviewAddress, preview: PreviewServer) -> _HTTPServer:
    """The HTTP server of ``preview`` listening on ``address``, or one line saying why it cannot."""
    try:
        found = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise SpgimError(f"--preview {address}: no such host ({error.strerror})") from None
    family, _, _, _, where = found[0]
    try:
        return _HTTPServer((str(where[0]), int(where[1])), family, preview)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise SpgimError(f"--preview {address}: the port is in use; give another, or 0 for any free one") from None
        raise SpgimError(f"--preview {address}: cannot listen there: {error.strerror}") from None
