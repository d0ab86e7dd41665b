"""A live MPEG-TS source on a loopback TCP port, served from a clip by a separate process.

``LoopbackSender(clip, port)`` starts ``python tests/loopback.py CLIP PORT`` and returns once the
port listens. For every client that connects (``av.open("tcp://127.0.0.1:PORT", timeout=...)``),
the sender decodes the clip and re-encodes it with libx264 ``ultrafast``/``zerolatency`` (one
keyframe a second, no B-frames) and AAC into FFmpeg's MPEG-TS muxer, paced at the clip's own frame
times (``realtime``), keeping its timestamps (variable frame rate survives). At the end of the clip
it closes the connection (the receiver sees EOF) and waits for the next client, unless ``loop``.
``stop()`` kills the process, which drops the connection like a camera going away; ``restart()``
serves again on the same port, so a receiver's reconnect can be tested.

What a receiver sees (PyAV 18.1): frames at about the clip's rate; ``stop()`` in the middle ends
``container.demux()``/``decode()`` quietly, as at EOF (no exception); ``av.open`` while the sender is
stopped raises ``av.error.ConnectionRefusedError``. After a reconnect the clip starts over and the
timestamps start again from the muxer's offset (~1.4 s). ``av.open`` spends ~0.9 s probing the frame
rate of a paced stream unless given ``options={"fpsprobesize": "0"}`` (then ~0.1 s, but
``average_rate`` may be unknown). Rotation is not sent: MPEG-TS has no display matrix.

The sender owns its listening socket (instead of FFmpeg's ``tcp://...?listen=1``) so that the
parent knows exactly when the port accepts connections, and so that it can serve client after
client. Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av

HOST = "127.0.0.1"
_TS_TIME_BASE = Fraction(1, 90000)
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class LoopbackSender:
    """Serve ``source_clip`` as live MPEG-TS over TCP on ``127.0.0.1:port`` from a child process.

    Args:
        source_clip: any file PyAV decodes; its first video stream and (with ``audio``) first audio
            stream are sent.
        port: TCP port; 0 picks a free one (read it back from :attr:`port`).
        realtime: pace frames at the clip's frame times; else send as fast as the receiver reads.
        loop: start the clip over at its end (timestamps keep increasing) instead of closing.
        audio: send the clip's audio too, re-encoded to AAC.
        ready_timeout: seconds to wait for the child to listen.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        source_clip: str | os.PathLike[str],
        port: int = 0,
        *,
        realtime: bool = True,
        loop: bool = False,
        audio: bool = True,
        ready_timeout: float = 30.0,
    ) -> None:
        self.source_clip = Path(source_clip)
        self.port = port
        self.realtime = realtime
        self.loop = loop
        self.audio = audio
        self.ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """What a receiver opens: ``tcp://127.0.0.1:PORT``."""
        return f"tcp://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> LoopbackSender:
        """Start the child and wait until the port listens; returns ``self``."""
        if self.running:
            raise RuntimeError("the sender is already running")
        command = [sys.executable, str(Path(__file__).resolve()), str(self.source_clip), str(self.port)]
        command += [
            flag for flag, on in (("--realtime", self.realtime), ("--loop", self.loop), ("--audio", self.audio)) if on
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE)
        self._process = process
        assert process.stdout is not None
        deadline = time.monotonic() + self.ready_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            readable, _, _ = select.select([process.stdout], [], [], max(0.0, left))
            chunk = os.read(process.stdout.fileno(), 64) if readable else b""
            if not chunk:
                self.stop()
                raise RuntimeError(f"the loopback sender did not start listening on port {self.port}: {line!r}")
            line += chunk
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        """Kill the child (SIGTERM, then SIGKILL after 5 s); connections drop at once."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def restart(self) -> LoopbackSender:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def __enter__(self) -> LoopbackSender:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


# --- the child process --------------------------------------------------------------------------


class _SocketSink:
    """The file-like object the muxer writes to: every write goes straight to the socket."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection

    def write(self, data: bytes) -> int:
        self.connection.sendall(data)
        return len(data)


def serve(source: Path, port: int, *, realtime: bool, loop: bool, audio: bool) -> None:
    """Listen on ``127.0.0.1:port`` and send ``source`` to each client in turn, forever."""
    av.logging.set_level(av.logging.ERROR)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The previous sender's connections may linger in TIME_WAIT; restart() must still bind.
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((HOST, port))
    server.listen(1)
    print(f"listening {server.getsockname()[1]}", flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            try:
                _send(source, connection, realtime=realtime, loop=loop, audio=audio)
            except (OSError, av.FFmpegError) as error:
                print(f"loopback sender: client gone: {error}", file=sys.stderr)


def _send(source: Path, connection: socket.socket, *, realtime: bool, loop: bool, audio: bool) -> None:
    """Send ``source`` once (or forever with ``loop``) to one connected client."""
    with av.open(str(source)) as probe:
        video_in = probe.streams.video[0]
        width, height = video_in.codec_context.width, video_in.codec_context.height
        rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
        audio_rate = probe.streams.audio[0].codec_context.sample_rate if audio and probe.streams.audio else 0
    # flush_packets: every packet leaves at once, or the 32 kB I/O buffer would add seconds of latency.
    with av.open(_SocketSink(connection), "w", format="mpegts", container_options={"flush_packets": "1"}) as out:
        encoder = _Encoder(out, width, height, rate, audio_rate)
        started = time.monotonic()
        while True:
            encoder.send_clip(source, started if realtime else None)
            if not loop:
                break
        encoder.flush()


class _Encoder:
    """libx264 (zero latency) and AAC into one MPEG-TS output, on one timeline across repeats of the clip."""

    def __init__(
        self, out: av.container.OutputContainer, width: int, height: int, rate: Fraction, audio_rate: int
    ) -> None:
        self.out = out
        self.rate = rate
        options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": f"keyint={max(1, round(rate))}"}
        self.video = out.add_stream("libx264", rate=rate, options=options)
        self.video.width, self.video.height = width, height
        self.video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.video.codec_context.time_base = _TS_TIME_BASE
        self.audio = (
            out.add_stream("aac", rate=audio_rate if audio_rate in _AAC_RATES else 48000) if audio_rate else None
        )
        self.offset = Fraction(0)  # where the current repeat of the clip starts on the output timeline
        self.samples = 0

    def send_clip(self, source: Path, started: float | None) -> None:
        """Decode ``source`` and encode it after what was sent; pace to ``started`` + frame time if given."""
        end = self.offset
        with av.open(str(source)) as clip:
            video = clip.streams.video[0]
            video.thread_type = "AUTO"
            streams: list[av.stream.Stream] = [video]
            if self.audio is not None:
                streams.append(clip.streams.audio[0])
            first: Fraction | None = None
            for packet in clip.demux(streams):
                for frame in packet.decode():
                    if isinstance(frame, av.AudioFrame):
                        self._send_audio(frame)
                    elif isinstance(frame, av.VideoFrame) and frame.pts is not None and frame.time_base is not None:
                        t = frame.pts * frame.time_base
                        first = t if first is None else first
                        at = self.offset + t - first
                        end = max(end, at + 1 / self.rate)
                        if started is not None:
                            time.sleep(max(0.0, started + float(at) - time.monotonic()))
                        image = frame.reformat(format=self.video.pix_fmt)
                        image.pts, image.time_base = round(at / _TS_TIME_BASE), _TS_TIME_BASE
                        self.out.mux(self.video.encode(image))
        self.offset = end

    def _send_audio(self, frame: av.AudioFrame) -> None:
        assert self.audio is not None
        # A running sample count keeps the audio continuous across repeats of the clip.
        frame.pts, frame.time_base = self.samples, Fraction(1, frame.sample_rate)
        self.samples += frame.samples
        self.out.mux(self.audio.encode(frame))

    def flush(self) -> None:
        """Drain the encoders."""
        self.out.mux(self.video.encode(None))
        if self.audio is not None:
            self.out.mux(self.audio.encode(None))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child: ``python tests/loopback.py CLIP PORT [--realtime] [--loop] [--audio]``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--realtime", action="store_true", help="send at the clip's frame times")
    parser.add_argument("--loop", action="store_true", help="repeat the clip instead of closing at its end")
    parser.add_argument("--audio", action="store_true", help="send the clip's audio too (AAC)")
    args = parser.parse_args(argv)
    # An ignored SIGTERM is inherited across exec; stop() relies on the default action.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    serve(args.clip, args.port, realtime=args.realtime, loop=args.loop, audio=args.audio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
