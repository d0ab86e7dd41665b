"""No secret of a URL ever printed: user info, an RTMP stream key, an RTSP token, SRT's streamid and passphrase,
as sources and as destinations, refused, dropped mid-stream or never there; in stdout, stderr, log lines, notes,
the result's JSON and exception text."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from loopback import free_port
from media import make_clip
from servers import RtmpServer, SrtRelay, free_udp_base, require_servers

from spgim.errors import SpgimError
from spgim.streaming.job import matte_video
from spgim.streaming.options import Outputs, SourceOptions
from spgim.streaming.urls import redact, scrub

pytestmark = pytest.mark.slow  # real servers and time-outs

SPGIM = str(Path(sys.executable).with_name("spgim"))
SECRETS = ("hunter2pass", "streamKEY123secret", "tok3nSECRET1", "0123456789secret", "alice")


def secret_urls(port: int, udp_port: int) -> dict[str, str]:
    """One URL per protocol, every kind of secret in it, pointing where nothing listens."""
    return {
        "rtmp": f"rtmp://user:hunter2pass@127.0.0.1:{port}/live/streamKEY123secret",
        "rtsp": f"rtsp://admin:hunter2pass@127.0.0.1:{port}/cam?token=tok3nSECRET1&channel=2",
        "srt": f"srt://127.0.0.1:{udp_port}?streamid=publish:cam:alice:hunter2pass&passphrase=0123456789secret",
    }


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def grey_matte(images: np.ndarray) -> np.ndarray:
    return images[..., 0].astype(np.float32) / 255.0


def test_redacted_urls_keep_their_shape() -> None:
    urls = secret_urls(1935, 9000)
    assert redact(urls["rtmp"]) == "rtmp://***@127.0.0.1:1935/live/***"
    assert redact(urls["rtsp"]) == "rtsp://***@127.0.0.1:1935/cam?token=***&channel=2"
    assert redact(urls["srt"]) == "srt://127.0.0.1:9000?streamid=publish:***&passphrase=***"
    assert redact("rtmp://a.rtmp.youtube.com/live2/abcd-1234") == "rtmp://a.rtmp.youtube.com/live2/***"
    access = "srt://h:9000?streamid=%23!::r=live/key1234567,m=publish,u=bob,s=s3cr3tword"
    assert redact(access) == "srt://h:9000?streamid=#!::r=***,m=publish,u=***,s=***"
    # FFmpeg may quote a part of the URL, decoded or not; every secret goes, ordinary words stay.
    message = "stream live/key1234567 failed for s3cr3tword: the stream ended"
    assert scrub(message, access) == "stream *** failed for ***: the stream ended"


@pytest.mark.parametrize("role", ["source", "destination"])
def test_no_secret_reaches_the_terminal_when_nothing_answers(model: Path, tmp_path: Path, role: str) -> None:
    require_servers()  # libsrt
    clip = make_clip(tmp_path / "in.mp4", size=(96, 64), frames=50, fps=25).path

    def run(url: str) -> subprocess.CompletedProcess[str]:
        if role == "source":
            arguments = [url, "--output", str(tmp_path / f"out-{url[:4]}.mp4")]
        else:
            arguments = [str(clip), "--output", url]
        command = [SPGIM, "matte", *arguments, "--model", str(model), "--reconnects", "1", "--quiet"]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    urls = secret_urls(free_port(), free_udp_base(2))
    with ThreadPoolExecutor(len(urls)) as pool:
        done = dict(zip(urls, pool.map(run, urls.values()), strict=True))
    for protocol, result in done.items():
        text = result.stdout + result.stderr
        assert result.returncode != 0 and "Traceback" not in text, (protocol, text)
        assert [line for line in text.splitlines() if "error:" in line], (protocol, text)
        assert not leaked(text), (protocol, leaked(text), text)
        assert redact(urls[protocol]).split("?")[0] in text, (protocol, text)  # still says where


def test_no_secret_in_messages_notes_json_or_errors_of_failing_destinations(tmp_path: Path) -> None:
    require_servers()
    clip = make_clip(tmp_path / "in.mp4", size=(96, 64), frames=150, fps=25).path
    server = RtmpServer(tmp_path)
    # nginx-rtmp takes any stream key: publishing works until the server is killed.
    rtmp = f"rtmp://user:hunter2pass@127.0.0.1:{server.port}/live/streamKEY123secret"
    sink = SrtRelay(tmp_path, sink=tmp_path / "sink.ts")  # no passphrase: one that sends one is rejected
    srt = f"{sink.publish_url()}?streamid=publish:cam:alice:hunter2pass&passphrase=0123456789secret"
    killer = threading.Timer(2.0, server.stop)
    messages: list[str] = []
    killer.start()
    try:
        outputs = Outputs(composite=[rtmp, srt, tmp_path / "rec.mp4"])
        result = matte_video(clip, outputs, matter=grey_matte, log=messages.append)
    finally:
        killer.join()
        server.stop()
        sink.stop()
    assert any("dropped" in message for message in messages), messages  # the RTMP server went mid-stream
    assert any("cannot connect to srt://" in message for message in messages), messages  # rejected
    text = "\n".join([*messages, json.dumps(dataclasses.asdict(result))])
    assert not leaked(text), (leaked(text), text)
    # The only output, given up: the exception's text.
    with pytest.raises(SpgimError) as refused:
        matte_video(
            clip, Outputs(composite=srt), matter=grey_matte, reading=SourceOptions(reconnects=1), log=messages.append
        )
    assert "gave up" in str(refused.value) and not leaked(str(refused.value)), str(refused.value)
