"""Live sources against real servers on 127.0.0.1 (see ``servers.py``), and the SRT connection under them.

- SRT: whole TS packets per message, secrets out of ``repr``, the library's version checked.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from pathlib import Path

import av
import pytest
from media import make_clip
from servers import HOST, _Process, free_udp_base, require_servers

from spgim.errors import SpgimError


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("sources-clip") / "src.mp4", size=(320, 192), frames=100, fps=25).path


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
