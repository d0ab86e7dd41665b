"""Per-protocol live figures: ``spgim matte`` reading RTSP (UDP, TCP), RTMP and SRT from real servers on
127.0.0.1 through a publisher outage, and how long the demuxer takes to open each with and without the
low-delay options.

    .venv/bin/python scripts/live_protocols.py --model EXPORT --json live-protocols.json

For each protocol: Debian's ffmpeg publishes a generated 320x192 clip at 25 fps to the server (the test
servers of ``tests/servers.py``; ``tests/install_servers.sh`` installs them); ``spgim matte URL`` runs as
a subprocess for ``--duration`` seconds of capture; the publisher is killed ``--outage-at`` seconds in and
restarted ``--outage`` seconds later. Reported: start-up to the first written frame
(the summary's, model loading and opening the source included), latency p50/p90, frames in/out/dropped,
reconnects, the longest gap in the output (its capture timestamps) and the hole beyond the outage itself.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from media import make_clip  # noqa: E402
from servers import Publisher, RtmpServer, RtspServer, SrtRelay, wait_until_playable  # noqa: E402

PROTOCOLS = ("rtsp-udp", "rtsp-tcp", "rtmp", "srt")
_SUMMARY = re.compile(
    r"(?P<frames_in>\d+) frames in, (?P<frames_out>\d+) out, (?P<dropped>\d+) dropped.*latency p50 (?P<p50>\d+) ms "
    r"p90 (?P<p90>\d+) ms, (?P<reconnects>\d+) reconnects, first frame after (?P<startup>[\d.]+) s"
)


def _serve(protocol: str, clip: Path, folder: Path) -> tuple[Any, Publisher, str]:
    if protocol.startswith("rtsp"):
        server: Any = RtspServer(folder)
        publisher = Publisher(clip, server.publish_url(), "rtsp", folder, options=("-rtsp_transport", "udp"))
        return server, publisher, server.play_url()
    if protocol == "rtmp":
        server = RtmpServer(folder)
        return server, Publisher(clip, server.url(), "flv", folder), server.url()
    server = SrtRelay(folder)
    return server, Publisher(clip, server.publish_url(), "mpegts", folder), server.play_url()


def matte_through_outage(protocol: str, model: Path, clip: Path, folder: Path, args: argparse.Namespace) -> dict:
    """One ``spgim matte`` run against ``protocol`` with the publisher away for ``args.outage`` seconds."""
    import av

    from spgim.streaming.urls import redact

    server, publisher, url = _serve(protocol, clip, folder)
    alpha = folder / f"{protocol}-alpha.mkv"
    command = [sys.executable, "-m", "spgim", "matte", url, "--model", str(model), "--alpha", str(alpha)]
    command += ["--duration", str(args.duration), "--work-size", str(args.work_size), "--backend", "onnxruntime"]
    if protocol.startswith("rtsp-"):
        command += ["--rtsp-transport", protocol.split("-")[1]]
    with server, publisher:
        if protocol == "srt":
            time.sleep(1.0)
        else:
            wait_until_playable(url)
        job = subprocess.Popen([*command, "--quiet"], stderr=subprocess.PIPE, text=True)
        time.sleep(args.outage_at)
        publisher.stop()
        time.sleep(args.outage)
        publisher.start()
        _, stderr = job.communicate(timeout=120)
    summary = _SUMMARY.search(stderr)
    if job.returncode != 0 or summary is None:
        raise SystemExit(f"{protocol}: spgim matte failed ({job.returncode}):\n{stderr}")
    with av.open(str(alpha)) as container:
        stream = container.streams.video[0]
        times = [float(packet.pts * stream.time_base) for packet in container.demux(stream) if packet.pts is not None]
    times.sort()
    longest = max(b - a for a, b in itertools.pairwise(times))
    figures = {key: float(value) for key, value in summary.groupdict().items()}
    return {
        "protocol": protocol,
        "url": redact(url),
        "startup_s": figures["startup"],
        "latency_p50_ms": figures["p50"],
        "latency_p90_ms": figures["p90"],
        "frames_in": int(figures["frames_in"]),
        "frames_out": int(figures["frames_out"]),
        "dropped": int(figures["dropped"]),
        "reconnects": int(figures["reconnects"]),
        "outage_s": args.outage,
        "longest_gap_s": round(longest, 3),
        "hole_beyond_outage_s": round(longest - args.outage, 3),
        "frames_lost_to_reconnect": round((longest - args.outage) * 25),
        "log": [line for line in stderr.splitlines() if "reconnect" in line or "dropped (" in line],
    }


def demux_open_times(protocol: str, clip: Path, folder: Path, repeats: int) -> dict:
    """Seconds from ``av.open`` to the first decoded frame, FFmpeg's defaults against spgim's live options."""
    import av

    from spgim.streaming.network import demux_options

    server, publisher, url = _serve(protocol, clip, folder)
    transport = protocol.split("-")[1] if protocol.startswith("rtsp-") else None
    variants = {
        "ffmpeg_default": demux_options(url, live=False, rtsp_transport=transport),
        "spgim_live": demux_options(url, live=True, rtsp_transport=transport),
    }
    found: dict[str, list[float]] = {name: [] for name in variants}
    with server, publisher:
        wait_until_playable(url)
        for _, (name, options) in itertools.product(range(repeats), variants.items()):
            start = time.monotonic()
            with av.open(url, options=options, timeout=(10.0, 5.0)) as container:
                for packet in container.demux(video=0):
                    if packet.decode():
                        break
            found[name].append(round(time.monotonic() - start, 3))
    return {"protocol": protocol, **found}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="an spgim export folder (e.g. the tiny config)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--duration", type=float, default=16.0)
    parser.add_argument("--outage-at", type=float, default=5.0)
    parser.add_argument("--outage", type=float, default=3.0)
    parser.add_argument("--work-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="opens per demuxer variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        clip = make_clip(folder / "clip.mp4", size=(320, 192), frames=100, fps=25).path
        report: dict[str, Any] = {"runs": [], "demux_open_to_first_frame_s": []}
        for protocol in args.protocols.split(","):
            run = matte_through_outage(protocol, args.model, clip, folder, args)
            print(json.dumps({k: v for k, v in run.items() if k != "log"}), flush=True)
            report["runs"].append(run)
        for protocol in ("rtsp-udp", "rtmp"):  # PyAV cannot open SRT itself
            times = demux_open_times(protocol, clip, folder, args.repeats)
            print(json.dumps(times), flush=True)
            report["demux_open_to_first_frame_s"].append(times)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
