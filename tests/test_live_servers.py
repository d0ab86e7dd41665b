"""Live matting against real servers on 127.0.0.1 (see ``servers.py``): RTSP over UDP and TCP, RTMP
(nginx-rtmp) and SRT (srt-live-transmit) as sources through a 3 s publisher outage, and the matted
stream published to each of them (and to UDP) while a recording is written."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from loopback import free_port
from media import make_clip
from servers import RtmpServer, RtspServer, SrtRelay, free_udp_base, published, read_back, require_servers
from streaming_util import probe, through_outage

from spgim.errors import SpgimError
from spgim.runtime.matting import Matter
from spgim.streaming.frames import VideoInfo
from spgim.streaming.job import matte_video
from spgim.streaming.network import demux_options
from spgim.streaming.options import Outputs, SourceOptions
from spgim.streaming.publish import PublishedStream, is_destination
from spgim.streaming.sources import PyAVSource, open_source
from spgim.streaming.srt import parse_srt_url

pytestmark = pytest.mark.slow  # real servers and outages

OUTAGE_S = 3.0


@pytest.mark.parametrize("protocol", ["rtsp-udp", "rtsp-tcp", "rtmp", "srt"])
def test_a_live_source_comes_back_within_seconds_of_a_publisher_outage(
    protocol: str, matter: Matter, clip: Path, tmp_path: Path
) -> None:
    require_servers()
    transport = protocol.partition("-")[2] or None
    with published(protocol, clip, tmp_path) as (publisher, url):
        result, messages, gaps = through_outage(
            url,
            publisher,
            tmp_path,
            outage=OUTAGE_S,
            under_way=lambda: time.sleep(3.0),
            matter=matter,
            reading=SourceOptions(duration=9.0, rtsp_transport=transport),
            composite=tmp_path / "live.mp4",
        )
    assert max(gaps) <= 6.0, f"longest gap {max(gaps):.2f} s; {messages}"
    made = probe(tmp_path / "live.mp4")
    assert (made.width, made.height) == (320, 192) and len(made.times) == result.frames_out


@pytest.mark.parametrize("protocol", ["rtmp", "rtsp", "srt", "udp"])
def test_the_matte_is_published_live_and_recorded(protocol: str, matter: Matter, tmp_path: Path) -> None:
    require_servers()
    source = make_clip(tmp_path / "in.mp4", size=(320, 192), frames=75, fps=25, audio="aac")
    found: dict[str, Any] = {"frames": 0, "size": None}
    sink = tmp_path / "received.ts"
    server: Any = None
    reader_options: dict[str, Any] = {}
    if protocol == "rtmp":
        server = RtmpServer(tmp_path)
        destination = play = server.url()
    elif protocol == "rtsp":
        server = RtspServer(tmp_path)
        destination, play = server.publish_url(), server.play_url()
        reader_options = {"options": {"rtsp_transport": "udp"}}
    elif protocol == "srt":
        server = SrtRelay(tmp_path, sink=sink)
        destination, play = server.publish_url(), ""
    else:
        port = free_udp_base(2)
        destination, play = f"udp://127.0.0.1:{port}", f"udp://127.0.0.1:{port}?timeout=3000000"
    reader = threading.Thread(
        target=read_back, args=(play, found), kwargs={"deadline": time.monotonic() + 20, **reader_options}
    )
    try:
        if play:
            reader.start()
        messages: list[str] = []
        result = matte_video(
            source.path,
            Outputs(composite=[destination, tmp_path / "recording.mp4"]),
            matter=matter,
            reading=SourceOptions(rtsp_transport="udp" if protocol == "rtsp" else None),
            log=messages.append,
            progress=False,
        )
        if play:
            reader.join(30)
        if protocol == "srt":
            server.settle()
    finally:
        if server is not None:
            server.stop()
    assert result.frames_out == 75
    assert any(note.endswith(": 75 frames published") for note in result.notes), (result.notes, messages)
    # Read at the clip's pace (as ffmpeg -re), not as fast as it decodes.
    assert result.wall_s >= 2.5
    if protocol == "srt":
        received = probe(sink)
        found = {"frames": len(received.times), "size": (received.width, received.height)}
        # The whole stream, to its last frame: the sender waits out the receiver's latency before closing.
        assert found["frames"] == 75 and received.audio_codecs == ["aac"]
    # A player joins at a keyframe (one a second): the first second may be missed.
    assert found["frames"] >= 40 and found["size"] == (320, 192), found
    recording = probe(tmp_path / "recording.mp4")
    assert len(recording.times) == 75 and recording.audio_codecs == ["aac"]


def test_a_published_stream_reconnects_when_the_server_comes_back(matter: Matter, tmp_path: Path) -> None:
    require_servers()
    source = make_clip(tmp_path / "in.mp4", size=(160, 96), frames=250, fps=25)
    server = RtmpServer(tmp_path)
    restarted: list[RtmpServer] = []

    def outage() -> None:
        time.sleep(3.0)
        server.stop()
        time.sleep(OUTAGE_S)
        restarted.append(RtmpServer(tmp_path, port=server.port))

    messages: list[str] = []
    thread = threading.Thread(target=outage)
    thread.start()
    try:
        result = matte_video(
            source.path,
            Outputs(composite=[server.url(), tmp_path / "rec.mp4"]),
            matter=matter,
            log=messages.append,
            progress=False,
        )
    finally:
        thread.join()
        for started in [server, *restarted]:
            started.stop()
    assert any("dropped" in message for message in messages), messages
    assert any(message.endswith("again") for message in messages), messages
    summary = next(note for note in result.notes if "frames published" in note)
    published = int(summary.split(": ")[1].split()[0])
    assert 0 < published < 250 and "1 outages" in summary, summary
    assert len(probe(tmp_path / "rec.mp4").times) == 250


def test_a_refusing_destination_is_one_line_and_the_recording_goes_on(matter: Matter, tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mp4", size=(96, 64), frames=40, fps=25)
    secret_url = f"rtmp://user:hunter2@127.0.0.1:{free_port()}/live/key?token=abc"
    messages: list[str] = []
    result = matte_video(
        source.path,
        Outputs(composite=[secret_url, tmp_path / "rec.mp4"]),
        matter=matter,
        log=messages.append,
        progress=False,
    )
    assert result.frames_out == 40 and len(probe(tmp_path / "rec.mp4").times) == 40
    refusals = [message for message in messages if "cannot publish" in message]
    assert refusals and all("refused" in message.lower() for message in refusals), messages
    text = "\n".join([*messages, *result.notes, *result.outputs])
    assert "hunter2" not in text and "abc" not in text and "***" in text
    assert any("0 frames published" in note and "never connected" in note for note in result.notes), result.notes


def test_publishing_only_to_a_refusing_destination_fails_with_one_line(model: Path, tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mp4", size=(96, 64), frames=75, fps=25)
    url = f"rtmp://127.0.0.1:{free_port()}/live/key"
    command = [sys.executable, "-m", "spgim", "matte", str(source.path), "--model", str(model), "--output", url]
    done = subprocess.run([*command, "--reconnects", "1", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("spgim matte: error:")]
    assert len(errors) == 1 and "gave up" in errors[0] and "Traceback" not in done.stderr, done.stderr


def test_srt_urls_are_read_as_ffmpeg_writes_them() -> None:
    address = parse_srt_url("srt://example.org:9000?streamid=cam1&passphrase=0123456789ab&latency=200000")
    assert (address.host, address.port, address.streamid, address.latency_ms) == ("example.org", 9000, "cam1", 200)
    assert address.passphrase == "0123456789ab"
    with pytest.raises(SpgimError, match="mode=listener is not supported"):
        parse_srt_url("srt://127.0.0.1:9000?mode=listener")
    with pytest.raises(SpgimError, match="needs a host and a port"):
        parse_srt_url("srt://127.0.0.1")
    with pytest.raises(SpgimError, match="latency must be microseconds"):
        parse_srt_url("srt://127.0.0.1:9000?latency=fast")


def test_live_network_sources_are_demuxed_for_low_delay() -> None:
    options = demux_options("rtsp://camera/stream", live=True, rtsp_transport="tcp")
    assert options["rtsp_transport"] == "tcp" and options["fflags"] == "nobuffer"
    assert int(options["probesize"]) < 5_000_000 and int(options["analyzeduration"]) < 5_000_000
    assert demux_options("clip.mp4", live=False) == {}
    assert "rtsp_transport" not in demux_options("rtmp://server/live/key", live=True, rtsp_transport="udp")
    with pytest.raises(SpgimError, match="unknown RTSP transport 'http'"):
        open_source("rtsp://127.0.0.1:9/none", rtsp_transport="http")


def test_an_srt_source_nobody_serves_is_one_line(tmp_path: Path) -> None:
    require_servers()  # libsrt comes with srt-tools
    port = free_udp_base(2)
    with pytest.raises(SpgimError, match=rf"cannot connect to srt://127.0.0.1:{port}\?passphrase=\*\*\*"):
        PyAVSource(f"srt://127.0.0.1:{port}?passphrase=0123456789ab", live=True, open_timeout=1.0)


def test_a_foreground_cannot_be_published() -> None:
    info = VideoInfo(width=64, height=64, time_base=Fraction(1, 1000), rate=Fraction(25), live=True)
    with pytest.raises(SpgimError, match="no alpha plane"):
        PublishedStream("rtmp://127.0.0.1:1/live/key", "foreground", info)
    assert is_destination("srt://host:9000") and is_destination("udp://127.0.0.1:5000")
    assert not is_destination("out.mp4") and not is_destination("https://host/video.mp4")


def test_an_ffmpeg_srt_listener_receives_the_matte_as_an_obs_media_source_does(matter: Matter, tmp_path: Path) -> None:
    """The way into OBS that docs/obs.md gives: OBS's Media Source reads through FFmpeg, set to listen for SRT
    (``srt://127.0.0.1:PORT?mode=listener``) while ``spgim matte --output srt://127.0.0.1:PORT`` calls it. Debian's
    ffmpeg, listening the same way, stands in for it."""
    require_servers()
    source = make_clip(tmp_path / "in.mp4", size=(320, 192), frames=50, fps=25)
    port = free_udp_base(2)
    received = tmp_path / "obs.ts"
    listen = f"srt://127.0.0.1:{port}?mode=listener"
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", listen, "-c", "copy", str(received)]
    listener = subprocess.Popen(command, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(0.5)  # listening once the process runs
        result = matte_video(
            source.path,
            Outputs(composite=[f"srt://127.0.0.1:{port}"]),
            matter=matter,
            log=lambda line: None,
            progress=False,
        )
        try:
            listener.wait(timeout=15)  # the caller's close ends FFmpeg's input
        except subprocess.TimeoutExpired:
            listener.send_signal(2)  # SIGINT: FFmpeg finishes the file it writes
            listener.wait(timeout=15)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert result.frames_out == 50
    made = probe(received)
    assert (made.width, made.height) == (320, 192) and len(made.times) >= 45, (len(made.times), listener.stderr)
