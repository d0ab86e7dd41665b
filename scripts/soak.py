"""Soak: matte a long generated clip as a file job and as a live loopback job, sampling the job's resident
memory every second; reports the growth per 1,000 frames after warm-up (target: flat, < 10 MiB).

    .venv/bin/python scripts/soak.py --model EXPORT [--frames 10000] [--size 320x192] [--json soak.json]

The clip is a moving pattern (the weights and the picture do not change what is allocated); the live
job reads it from ``tests/loopback.py``'s MPEG-TS sender paced at 30 frames/s, so it takes frames/30
seconds. Linux only (RSS from /proc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from loopback import LoopbackSender  # noqa: E402

from spgim.sizes import parse_size  # noqa: E402

WARM_UP = 0.2  # share of the run left out of the fit: model loading, first allocations, encoder look-ahead
FPS = 30


def write_clip(path: Path, frames: int, width: int, height: int) -> None:
    """A ``frames``-long H.264 clip at 30 frames/s: a bright square moving over a drifting ramp."""
    ys, xs = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[..., 0] = (xs + index * 3) % 256
            image[..., 1] = (ys + index) % 256
            image[..., 2] = 80
            x, y = (index * 4) % (width - height // 3), (index * 2) % (height - height // 3)
            image[y : y + height // 3, x : x + height // 3] = 250
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def rss_mib(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB, or None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample(command: list[str]) -> tuple[list[tuple[float, float]], str, int]:
    """Run ``command``, sampling its RSS every second: ([(seconds, MiB)], stderr's last line, exit code)."""
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
        start, samples = time.monotonic(), []
        while process.poll() is None:
            value = rss_mib(process.pid)
            if value is not None:
                samples.append((time.monotonic() - start, value))
            time.sleep(1.0)
        log.seek(0)
        lines = [line for line in log.read().splitlines() if line.strip()]
    return samples, lines[-1] if lines else "", process.returncode


def growth(samples: list[tuple[float, float]], frames: int) -> dict[str, float]:
    """RSS figures and the least-squares growth per 1,000 frames after warm-up (frames spread evenly in time)."""
    seconds = np.array([s for s, _ in samples])
    rss = np.array([r for _, r in samples])
    kept = seconds >= WARM_UP * seconds[-1]
    frame_at = seconds / seconds[-1] * frames
    slope = float(np.polyfit(frame_at[kept], rss[kept], 1)[0]) if kept.sum() >= 3 else float("nan")
    return {
        "samples": len(samples),
        "seconds": round(float(seconds[-1]), 1),
        "rss_after_warm_up_mib": round(float(rss[kept][0]), 1),
        "rss_end_mib": round(float(rss[-1]), 1),
        "rss_peak_mib": round(float(rss.max()), 1),
        "growth_mib_per_1000_frames": round(slope * 1000, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="an spgim export folder")
    parser.add_argument("--frames", type=int, default=10_000, help="clip length (default 10000)")
    parser.add_argument("--size", default="320x192", help="clip size WxH (default 320x192)")
    parser.add_argument("--jobs", default="file,live", help="file, live or both (default file,live)")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args()
    height, width = parse_size(args.size)
    spgim = str(Path(sys.executable).with_name("spgim"))
    report: dict[str, object] = {"frames": args.frames, "size": f"{width}x{height}", "model": str(args.model)}
    with tempfile.TemporaryDirectory() as scratch:
        clip = Path(scratch) / "soak.mp4"
        write_clip(clip, args.frames, width, height)
        base = ["matte", "--model", str(args.model), "--backend", "onnxruntime", "--quiet"]
        if "file" in args.jobs:
            samples, last, code = sample([spgim, *base[:1], str(clip), *base[1:], "--output", f"{scratch}/file.mp4"])
            report["file"] = {**growth(samples, args.frames), "exit": code, "summary": last}
        if "live" in args.jobs:
            with LoopbackSender(clip, realtime=True, loop=True, audio=False) as sender:
                url = f"tcp://127.0.0.1:{sender.port}"
                duration = str(args.frames / FPS)
                command = [spgim, "matte", url, *base[1:], "--output", f"{scratch}/live.mp4", "--duration", duration]
                samples, last, code = sample(command)
            report["live"] = {**growth(samples, args.frames), "exit": code, "summary": last}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
