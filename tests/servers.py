"""Real media servers on 127.0.0.1 for the live tests, and Debian's ffmpeg as the publisher.

- :class:`RtspServer`: Debian's ``librtsp-server-perl`` (``tests/rtsp_server.pl``): publishers ANNOUNCE and
  RECORD on one port, players PLAY on another, RTP over UDP or interleaved in the RTSP connection (TCP).
- :class:`RtmpServer`: Debian's nginx with ``libnginx-mod-rtmp``, one ``live`` application.
- :class:`SrtRelay`: ``srt-tools``' ``srt-live-transmit``, a listener for the publisher relayed to a
  listener for the player (or to a file, to read back what was published).
- :class:`Publisher`: ``ffmpeg -re`` sending a clip in a loop (H.264 ultrafast/zerolatency, a keyframe
  every half second) to any of them; ``stop()`` kills it like a camera going away, ``start()`` again.
- :func:`published`: one of the servers with a publisher sending to it, and the URL a player opens.

``.ci/run`` installs the packages (``tests/install_servers.sh``); elsewhere a missing one skips the test.
Every process binds 127.0.0.1 only and is killed when its context ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from loopback import free_port
from requirements import unavailable

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
PACKAGES = "librtsp-server-perl nginx libnginx-mod-rtmp srt-tools ffmpeg"


def require_servers() -> None:
    """Skip (outside CI) or fail (in CI) unless the servers and Debian's ffmpeg are installed."""
    missing = [tool for tool in ("ffmpeg", "perl", "nginx", "srt-live-transmit") if shutil.which(tool) is None]
    if shutil.which("perl") and subprocess.run(["perl", "-MRTSP::Server", "-e1"], capture_output=True).returncode:
        missing.append("RTSP::Server")
    if not NGINX_RTMP_MODULE.exists():
        missing.append(str(NGINX_RTMP_MODULE))
    if missing:
        unavailable(f"live servers missing ({', '.join(missing)}): apt-get install {PACKAGES}")


def free_udp_base(span: int = 40) -> int:
    """An even UDP port with ``span`` free ports above it (RTP/RTCP pairs)."""
    for _ in range(50):
        base = 20000 + 2 * int.from_bytes(os.urandom(2), "little") % 20000
        try:
            probes = []
            for port in range(base, base + span):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(probe)
                probe.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError("no free UDP port range")


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class _Process:
    """A child process killed (with its group) when stopped or when the context ends."""

    process: subprocess.Popen[bytes] | None = None

    def _spawn(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as sink:
            return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        """Kill the process (as a crash or a pulled cable would)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def __enter__(self) -> _Process:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


class RtspServer(_Process):
    """RTSP::Server: publish to :meth:`publish_url`, play from :meth:`play_url`."""

    def __init__(self, folder: Path) -> None:
        self.client_port, self.source_port, self.rtp_base = free_port(), free_port(), free_udp_base()
        self.log = folder / "rtsp-server.log"
        command = ["perl", str(HERE / "rtsp_server.pl"), str(self.client_port), str(self.source_port)]
        self.process = self._spawn([*command, str(self.rtp_base)], self.log)
        _wait_for_port(self.client_port, self.process, "the RTSP server")

    def publish_url(self, name: str = "live") -> str:
        return f"rtsp://{HOST}:{self.source_port}/{name}"

    def play_url(self, name: str = "live") -> str:
        return f"rtsp://{HOST}:{self.client_port}/{name}"


class RtmpServer(_Process):
    """nginx-rtmp with an application ``live``: publish and play ``rtmp://127.0.0.1:PORT/live/NAME``."""

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.port = port or free_port()
        prefix = folder / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        config = prefix / "nginx.conf"
        config.write_text(
            f"load_module {NGINX_RTMP_MODULE};\n"
            "daemon off;\nmaster_process off;\n"
            f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen {HOST}:{self.port}; chunk_size 4096;\n"
            "  application live { live on; record off; } } }\n"
        )
        self.log = prefix / "stdout.log"
        command = ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(config)]
        self.process = self._spawn(command, self.log)
        _wait_for_port(self.port, self.process, "nginx-rtmp")

    def url(self, name: str = "stream") -> str:
        return f"rtmp://{HOST}:{self.port}/live/{name}"


class SrtRelay(_Process):
    """srt-live-transmit as the SRT listener players connect to, fed MPEG-TS over UDP by the publisher;
    or, with ``sink``, an SRT listener for a publisher whose stream is written to ``sink``.

    (With listeners on both sides, srt-live-transmit 1.5.1 stops accepting players for good once a
    player has left while the publisher was away; a publisher over UDP keeps the relay simple.)
    ``srt_port`` listens on that port again (a listener restarted after :meth:`stop`).
    """

    def __init__(self, folder: Path, *, sink: Path | None = None, srt_port: int | None = None) -> None:
        self.input_port, self.srt_port = free_udp_base(2), srt_port or free_udp_base(2)
        self.sink = sink
        self.log = folder / "srt-live-transmit.log"
        listener = f"srt://{HOST}:{self.srt_port}?mode=listener"
        if sink is None:
            command = ["srt-live-transmit", "-a:yes", f"udp://{HOST}:{self.input_port}", listener]
            self.process = self._spawn(command, self.log)
        else:
            with sink.open("wb") as out, self.log.open("ab") as errors:
                command = ["srt-live-transmit", "-a:yes", listener, "file://con"]
                self.process = subprocess.Popen(command, stdout=out, stderr=errors, start_new_session=True)
        time.sleep(0.3)  # UDP: nothing to connect to; the listener is up once the process runs
        if self.process.poll() is not None:
            raise RuntimeError(f"srt-live-transmit exited: {self.log.read_text()[-500:]}")

    def publish_url(self) -> str:
        """Where the publisher sends MPEG-TS (UDP) or, with a sink, connects (SRT)."""
        if self.process is not None and self.process.args[-1] == "file://con":
            return f"srt://{HOST}:{self.srt_port}"
        return f"udp://{HOST}:{self.input_port}?pkt_size=1316"

    def play_url(self) -> str:
        return f"srt://{HOST}:{self.srt_port}"

    def settle(self, quiet: float = 0.5, longest: float = 5.0) -> None:
        """Wait until the sink has not grown for ``quiet`` seconds: the last packets a publisher sent before
        closing reach the file up to the receiver's latency later, and :meth:`stop` would cut them off."""
        if self.sink is None:
            return
        deadline, size, since = time.monotonic() + longest, -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = self.sink.stat().st_size if self.sink.exists() else 0
            if now_size != size:
                size, since = now_size, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)


class Publisher(_Process):
    """Debian's ffmpeg sending ``clip`` in a loop, in real time, to ``url`` as ``format``."""

    def __init__(self, clip: Path, url: str, format: str, folder: Path, *, options: tuple[str, ...] = ()) -> None:
        self.command = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(clip),
            "-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "12", "-bf", "0",
            "-pix_fmt", "yuv420p", *options, "-f", format, url,
        ]  # fmt: skip
        self.log = folder / "publisher.log"

    def start(self) -> Publisher:
        """Start publishing (again)."""
        self.stop()
        self.process = self._spawn(self.command, self.log)
        return self

    def __enter__(self) -> Publisher:
        return self.start()


def wait_until_playable(url: str, timeout: float = 15.0, **options: str) -> None:
    """Return once a player can open ``url`` (the publisher has reached the server)."""
    import av

    deadline = time.monotonic() + timeout
    while True:
        try:
            av.open(url, timeout=(3.0, 3.0), options=options).close()
            return
        except av.error.FFmpegError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_back(url: str, found: dict[str, Any], *, deadline: float, **options: Any) -> None:
    """Decode what a server plays at ``url`` into ``found`` (frames, size) until the stream ends or the deadline."""
    import av

    while time.monotonic() < deadline:
        try:
            container = av.open(url, timeout=(3.0, 1.5), **options)
            break
        except av.error.FFmpegError:
            time.sleep(0.2)  # not published yet
    else:
        return
    try:
        for frame in container.decode(video=0):
            found["frames"] += 1
            found["size"] = (frame.width, frame.height)
    except av.error.FFmpegError:
        pass  # the publisher finished: the server goes quiet, the read times out
    finally:
        container.close()


@contextmanager
def published(
    protocol: str, clip: Path, folder: Path, *, options: tuple[str, ...] = (), wait: bool = True
) -> Iterator[tuple[Publisher, str]]:
    """A server for ``protocol`` ("rtsp", "rtmp" or "srt"; "rtsp-udp" and "rtsp-tcp" are "rtsp") with Debian's
    ffmpeg publishing ``clip`` to it, ``options`` added to its command (``("-g", "250")``: a keyframe every
    10 s); yields (publisher, player URL), once a player can join unless not ``wait``."""
    server: Any
    if protocol.startswith("rtsp"):
        server = RtspServer(folder)
        publisher = Publisher(clip, server.publish_url(), "rtsp", folder, options=("-rtsp_transport", "udp", *options))
        url = server.play_url()
    elif protocol == "rtmp":
        server = RtmpServer(folder)
        publisher, url = Publisher(clip, server.url(), "flv", folder, options=options), server.url()
    else:
        server = SrtRelay(folder)
        publisher, url = Publisher(clip, server.publish_url(), "mpegts", folder, options=options), server.play_url()
    with server, publisher:
        if wait and protocol == "srt":
            time.sleep(1.0)  # PyAV cannot open SRT; srt-live-transmit relays as soon as the publisher sends
        elif wait:
            wait_until_playable(url)
        yield publisher, url
