"""Live sources against real servers on 127.0.0.1 (see ``servers.py``), and the SRT connection under them.

- Start-up: a publisher whose keyframes are 10 s apart (``-g 250`` at 25 fps, as cameras' "smart" H.264
  modes) is joined between two, and waited on within the start-up budget; a source that is not up yet is
  retried and joined when it comes up; one that never comes up ends with one line after the reconnects.
- Outage: the same long-GOP publisher killed for 3 s. RTMP and SRT hold their connection, so the
  restarted publisher's first keyframe is caught; RTSP's server drops the session with its publisher, so
  a new session waits for the next keyframe (at most one keyframe interval).
- SRT: whole TS packets per message, sockets closed after failed attempts, secrets out of ``repr``, the
  library's version checked.
- A file whose video starts later than the audio spgim holds for it is one line.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from loopback import free_port
from servers import HOST, Publisher, RtmpServer, SrtRelay, _Process, free_udp_base, published, require_servers
from streaming_util import probe, through_outage

from spgim.errors import SpgimError
from spgim.runtime.matting import Matter
from spgim.streaming.job import matte_video
from spgim.streaming.options import Outputs, SourceOptions
from spgim.streaming.sources import PyAVSource, open_source

pytestmark = pytest.mark.slow  # real servers and outages

LONG_GOP = ("-g", "250")  # after Publisher's own -g: ffmpeg takes the last; a keyframe every 10 s at 25 fps
GOP_S = 10.0
OUTAGE_S = 3.0
JOIN_S = 2.0  # joined this long after the publisher starts: past its first keyframe, 8 s before the next


class _Watched:
    """The matter, and an event set once it has matted a frame: the live job has its first picture."""

    def __init__(self, matter: Matter) -> None:
        self.matter, self.started = matter, threading.Event()

    def __call__(self, images: np.ndarray) -> Any:
        self.started.set()
        return self.matter(images)


# What each protocol achieves through a 3 s outage of a publisher with keyframes 10 s apart (see the
# module's docstring): RTSP waits for the restarted publisher's second keyframe.
LONGEST_GAP_S = {"rtmp": 6.0, "srt": 6.0, "rtsp": OUTAGE_S + GOP_S + 2.0}


@pytest.mark.parametrize("protocol", ["rtmp", "srt", "rtsp"])
def test_a_long_gop_source_joined_mid_gop_starts_and_survives_an_outage(
    protocol: str, matter: Matter, clip: Path, tmp_path: Path
) -> None:
    require_servers()
    watched = _Watched(matter)

    def under_way() -> None:
        assert watched.started.wait(30), "no picture"  # the next keyframe, within the start-up budget
        time.sleep(2.0)

    # The job runs until this much capture time has passed: the outage, then frames again for a while.
    duration = 2.0 + LONGEST_GAP_S[protocol] + 2.0
    with published(protocol, clip, tmp_path, options=LONG_GOP, wait=False) as (publisher, url):
        time.sleep(JOIN_S)
        _, messages, gaps = through_outage(
            url,
            publisher,
            tmp_path,
            outage=OUTAGE_S,
            under_way=under_way,
            matter=watched,
            reading=SourceOptions(duration=duration),
        )
    assert max(gaps) <= LONGEST_GAP_S[protocol], f"longest gap {max(gaps):.2f} s; {messages}"


def test_a_live_source_that_is_not_up_yet_is_joined_when_it_comes_up(
    matter: Matter, clip: Path, tmp_path: Path
) -> None:
    require_servers()
    port = free_port()
    url = f"rtmp://{HOST}:{port}/live/stream"
    started: list[Any] = []

    def come_up() -> None:  # nothing listens for 1.5 s, then the server and its publisher start
        time.sleep(1.5)
        started.append(RtmpServer(tmp_path, port=port))
        started.append(Publisher(clip, url, "flv", tmp_path).start())

    messages: list[str] = []
    thread = threading.Thread(target=come_up)
    thread.start()
    try:
        result = matte_video(
            url,
            Outputs(composite=tmp_path / "live.mp4"),
            matter=matter,
            reading=SourceOptions(duration=1.0),
            log=messages.append,
            progress=False,
        )
    finally:
        thread.join()
        for process in reversed(started):
            process.stop()
    assert result.frames_out > 0 and len(probe(tmp_path / "live.mp4").times) == result.frames_out
    assert any("is not up" in message and "reconnect 1/5" in message for message in messages), messages


def test_a_live_source_that_never_comes_up_ends_with_one_line(model: Path, tmp_path: Path) -> None:
    url = f"rtmp://{HOST}:{free_port()}/live/key"
    command = [sys.executable, "-m", "spgim", "matte", url, "--model", str(model), "--output", str(tmp_path / "o.mp4")]
    done = subprocess.run([*command, "--reconnects", "2", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("spgim matte: error:")]
    assert len(errors) == 1 and "is not up" in errors[0] and "gave up after 2 reconnect attempts" in errors[0], errors
    assert "reconnect 2/2" in done.stderr, done.stderr
    # What another attempt cannot mend is one line at once, without retries.
    for hopeless, reason in [
        ("rtmp://no-such-host.invalid/live/key", "no such host"),
        (f"rtsp://{HOST}:99999/live", "Invalid argument"),
        ("rtmp:///live/key", "has no host"),
    ]:
        messages: list[str] = []
        with pytest.raises(SpgimError, match=reason):
            open_source(hopeless, log=messages.append)
        assert messages == [], (hopeless, messages)


# --- SRT --------------------------------------------------------------------------------------------


class _SrtToUdp(_Process):
    """srt-live-transmit as an SRT listener passing each message it receives on as one UDP datagram."""

    def __init__(self, folder: Path, udp_port: int) -> None:
        self.srt_port = free_udp_base(2)
        listener = f"srt://{HOST}:{self.srt_port}?mode=listener"
        self.process = self._spawn(["srt-live-transmit", listener, f"udp://{HOST}:{udp_port}"], folder / "srt.log")
        time.sleep(0.3)  # UDP: nothing to connect to; the listener is up once the process runs


def _transport_stream(clip: Path) -> bytes:
    """``clip``'s video remuxed into MPEG-TS, in memory."""
    buffer = io.BytesIO()
    with av.open(str(clip)) as source, av.open(buffer, "w", format="mpegts") as target:
        video = source.streams.video[0]
        stream = target.add_stream_from_template(video)
        for packet in source.demux(video):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    return buffer.getvalue()


def test_srt_messages_carry_whole_ts_packets_whatever_the_writes(clip: Path, tmp_path: Path) -> None:
    require_servers()
    from spgim.streaming.srt import SrtConnection

    stream = _transport_stream(clip)[: 188 * 400] + b"\x47" + bytes(49)  # and a partial packet at the end
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
    receiver.bind((HOST, 0))
    receiver.settimeout(2.0)
    datagrams: list[bytes] = []

    def receive() -> None:
        with contextlib.suppress(TimeoutError):
            while True:
                datagrams.append(receiver.recv(65536))

    with receiver, _SrtToUdp(tmp_path, receiver.getsockname()[1]) as relay:
        connection = SrtConnection(f"srt://{HOST}:{relay.srt_port}", sending=True)
        reader = threading.Thread(target=receive)
        reader.start()
        # A muxer's buffer that is no multiple of 188 (PyAV's default is 32 KiB) splits TS packets across writes.
        for start in range(0, len(stream), 1000):
            connection.write(stream[start : start + 1000])
            time.sleep(0.001)
        connection.close()  # sends the partial packet held back
        reader.join()
    assert b"".join(datagrams) == stream
    *whole, tail = datagrams
    assert all(len(message) % 188 == 0 and 0 < len(message) <= 1316 for message in whole), [len(d) for d in whole]
    assert all(message[i] == 0x47 for message in whole for i in range(0, len(message), 188))
    assert tail == b"\x47" + bytes(49)


class _AudioOnlyFeed(_Process):
    """Debian's ffmpeg sending an MPEG-TS stream with a tone and no video to ``url`` (UDP), in real time."""

    def __init__(self, url: str, folder: Path) -> None:
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "sine=frequency=440"]
        self.process = self._spawn([*command, "-c:a", "aac", "-f", "mpegts", url], folder / "audio-feed.log")


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_failed_srt_attempts_close_what_they_opened(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Each way an SRT source fails after its socket exists, many times: no socket (UDP descriptor) is left
    open once libsrt has collected the closed ones, and nothing is printed (PyAV prints an exception it
    drops: one raised through it while another was pending)."""
    require_servers()
    (tmp_path / "silent").mkdir()
    (tmp_path / "audio").mkdir()
    silent, audio_only = SrtRelay(tmp_path / "silent"), SrtRelay(tmp_path / "audio")
    nobody = f"srt://{HOST}:{free_udp_base(2)}"
    attempts = [  # (URL, what the failure says, how long the handshake may take)
        (f"{nobody}?streamid={'x' * 600}", "Bad parameters", 0.5),  # an option refused (stream ids: 512 bytes)
        (nobody, "cannot connect", 0.5),  # nobody listens: the handshake times out
        (silent.play_url(), "no data", 2.0),  # connected, and silence while probing: av.open fails
        (audio_only.play_url(), "no video stream", 2.0),  # opened: the set-up fails
    ]
    failures: dict[str, list[str]] = {}
    with silent, audio_only, _AudioOnlyFeed(audio_only.publish_url(), tmp_path):
        time.sleep(1.0)
        before = _open_files()
        for url, reason, handshake in attempts:
            for _ in range(4):
                with pytest.raises(SpgimError) as failed:
                    PyAVSource(url, live=True, open_timeout=handshake, stall_timeout=0.5, startup_timeout=1.0)
                failures.setdefault(reason, []).append(str(failed.value))
        deadline = time.monotonic() + 10  # libsrt's collector closes a socket's UDP port a second or so later
        while _open_files() > before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _open_files() <= before
    assert "exception" not in capfd.readouterr().err
    # Each path was taken (a relay may still be re-listening after its last caller left: "cannot connect").
    assert all(any(reason in message for message in messages) for reason, messages in failures.items()), failures


def test_an_srt_address_keeps_its_secrets_out_of_its_repr() -> None:
    from spgim.streaming.srt import parse_srt_url

    address = parse_srt_url("srt://example.org:9000?streamid=publish:cam:admin:hunter2&passphrase=0123456789ab")
    assert address.passphrase == "0123456789ab" and address.streamid == "publish:cam:admin:hunter2"
    shown = repr(address)
    assert "hunter2" not in shown and "0123456789ab" not in shown and "example.org" in shown
    # A passphrase libsrt would refuse ("Bad parameters") is one line that says why, without it.
    with pytest.raises(SpgimError, match="10 to 79 characters") as refused:
        parse_srt_url("srt://example.org:9000?passphrase=hunter2")
    assert "hunter2" not in str(refused.value)


def test_a_library_without_srt_or_too_old_is_the_install_hint() -> None:
    from spgim.streaming import srt

    with pytest.raises(SpgimError, match=r"srt:// needs libsrt 1\.4\.2.*libc\.so\.6 lacks srt_getversion"):
        srt.load_library(("libc.so.6", "libsrt.so.0.9"))  # a real library without libsrt's functions, a missing one
    assert not srt.usable_version(0x010401) and srt.usable_version(0x010402) and srt.usable_version(0x010501)
    assert not srt.usable_version(0x020000)
    assert srt.usable_version(srt.load_library().srt_getversion())  # the installed one, as used


# --- files ------------------------------------------------------------------------------------------


def _late_video(path: Path, audio_seconds: float) -> Path:
    """An MKV whose 7.1 96 kHz 32-bit PCM audio (3 MB/s) runs ``audio_seconds`` before its first video frame."""
    step = 9600  # samples per audio frame: 0.1 s
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("pcm_s32le", rate=96000, layout="7.1")
        for index in range(round(audio_seconds * 96000 / step) + 5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, step * 8), np.int32), format="s32", layout="7.1")
            frame.sample_rate, frame.pts = 96000, index * step
            out.mux(audio.encode(frame))
        for index in range(5):
            picture = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            picture.pts = round(audio_seconds * 25) + index
            out.mux(video.encode(picture))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def test_audio_held_before_the_first_video_frame_is_bounded(tmp_path: Path) -> None:
    late = open_source(str(_late_video(tmp_path / "late.mkv", 1.0)))
    try:
        first = next(i for i, item in enumerate(late.items(threading.Event())) if hasattr(item, "rgb"))
        assert first >= 10  # the second of audio before it, kept for the outputs
    finally:
        late.close()
    with pytest.raises(SpgimError, match=r"no video frame within its first 32 MiB of audio, 1\d s"):
        open_source(str(_late_video(tmp_path / "later.mkv", 12.0)))
