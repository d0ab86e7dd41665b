"""Frames per second of ``spgimmatte`` in ``gst-launch-1.0`` against ``spgim matte``, on one 720p clip and export.

    .venv/bin/python scripts/bench_gstreamer.py [--model EXPORT] [--clip CLIP] [--frames 250] [--rounds 3]
        [--backend onnxruntime] [--precision fp32] [--encode] [--json gstreamer-bench.json]

Without ``--model`` the shipped live pair is exported first (ONNX fp32, sizes 64..1280, as docs/reference-models.md
does); without ``--clip`` a 1280x720 clip of ``--frames`` frames at 25 fps is rendered by ``spgim data clip``. The
two runs alternate, ``--rounds`` times each, on the same clip, export, backend and precision, the model's keyframe
settings the export's:

- GStreamer: ``filesrc ! decodebin ! queue ! videoconvert ! spgimmatte output=composite post-messages=false !
  fakesink`` (the queue puts decoding in a thread of its own, as spgim matte's reader is), in the environment
  ``spgim gst-env`` prints; its frames per second over gst-launch-1.0's own "Execution ended after" time (from
  PLAYING to the end: the model's loading and the first, prerolled, frame left out). The clip's frames are
  counted once beforehand (and, with ``--encode``, checked against the frames written): a bus message a frame,
  printed by ``gst-launch-1.0 -m``, would cost the pipeline 5-8% of its time, which is the printing's, not the
  element's.
- spgim matte: ``--output composite.mp4`` (its usual job, so H.264 encoding included, which the GStreamer run does not
  do unless ``--encode``: then it ends in x264enc at spgim matte's preset and quality, mp4mux and filesink); its
  frames per second as its summary line reports them (the model's loading left out).

Both wall times, start-up included, are recorded too. The JSON holds each round, the medians, their ratio
(GStreamer / spgim matte) and the machine (CPU model and flags, libraries), as ``spgim bench`` records it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError
from spgim.gstreamer.environment import (
    check_gstreamer,
    find_loader,
    gst_environment,
    loader_python,
    verify_element,
    without_virtual_environments,
)
from spgim.machine import flags_line, machine_facts

ROOT = Path(__file__).resolve().parents[1]
SPGIM = [sys.executable, "-m", "spgim"]
EXECUTION = re.compile(r"Execution ended after (\d+):(\d+):(\d+(?:\.\d+)?)")
MATTE_SUMMARY = re.compile(r"(\d+) frames in, (\d+) out, .*?([\d.]+) fps")


def _run(command: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command[:6])} ... failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return done, wall


def _export_live_pair(folder: Path) -> Path:
    """The shipped live pair exported to ONNX fp32 (dynamic sizes 64..1280) in ``folder``."""
    weights = ROOT / "spgim" / "weights"
    out = folder / "live-export"
    command = [*SPGIM, "export", "--spd", str(weights / "live-spd.pt"), "--spgm", str(weights / "live-spgm.pt")]
    command += ["--out", str(out), "--formats", "onnx", "--precision", "fp32", "--height", "192", "--width", "320"]
    _run([*command, "--dynamic", "--min-size", "64x64", "--max-size", "1280x1280"])
    return out


# With --encode the GStreamer run writes what spgim matte writes: H.264 at x264's veryfast preset and constant
# quality 18 (spgim matte's file defaults) in MP4. x264enc comes from Debian's gstreamer1.0-plugins-ugly.
ENCODED_TAIL = (
    "queue max-size-buffers=4 ! videoconvert ! x264enc speed-preset=veryfast pass=qual quantizer=18 ! mp4mux "
    "! filesink location={out}"
)


def _count_frames(path: Path) -> int:
    """The video frames in ``path``, decoded."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _gstreamer_round(
    env: dict[str, str], clip: Path, frames: int, model: Path, engine: str, encoded: Path | None
) -> dict[str, Any]:
    tail = "fakesink" if encoded is None else ENCODED_TAIL.format(out=shlex.quote(str(encoded)))
    pipeline = (
        f"filesrc location={shlex.quote(str(clip))} ! decodebin ! queue max-size-buffers=4 ! videoconvert ! "
        f"spgimmatte model={shlex.quote(str(model))} {engine} output=composite post-messages=false ! {tail}"
    )
    done, wall = _run(["gst-launch-1.0", *shlex.split(pipeline)], env)
    ended = EXECUTION.search(done.stdout)
    if ended is None:
        raise SystemExit(f"gst-launch-1.0 printed no execution time:\n{done.stdout[-2000:]}")
    seconds = int(ended.group(1)) * 3600 + int(ended.group(2)) * 60 + float(ended.group(3))
    if encoded is not None and (written := _count_frames(encoded)) != frames:
        raise SystemExit(f"the GStreamer run wrote {written} frames of the clip's {frames}")
    # The first frame is matted while the pipeline prerolls, before the timed PLAYING part.
    return {"frames": frames, "fps": (frames - 1) / seconds if seconds > 0 else 0.0, "wall_s": wall}


def _matte_round(clip: Path, model: Path, backend: str, precision: str, folder: Path) -> dict[str, Any]:
    command = [*SPGIM, "matte", str(clip), "--model", str(model), "--output", str(folder / "composite.mp4")]
    done, wall = _run([*command, "--backend", backend, "--precision", precision, "--quiet"])
    summary = MATTE_SUMMARY.search(done.stderr)
    if summary is None:
        raise SystemExit(f"spgim matte printed no summary:\n{done.stderr[-2000:]}")
    return {"frames": int(summary.group(2)), "fps": float(summary.group(3)), "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="export folder (default: the shipped live pair, exported here)")
    parser.add_argument("--clip", type=Path, help="the clip (default: a 1280x720 spgim data clip)")
    parser.add_argument("--frames", type=int, default=250, help="frames of the rendered clip (default 250)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternated (default 3)")
    parser.add_argument("--backend", default="onnxruntime", help="a backend both run (default onnxruntime)")
    parser.add_argument("--precision", default="fp32", help="default fp32")
    parser.add_argument("--json", type=Path, help="write the report here (default: stdout only)")
    parser.add_argument(
        "--encode",
        action="store_true",
        help="GStreamer writes H.264 MP4 as spgim matte does (x264enc, from gstreamer1.0-plugins-ugly)",
    )
    args = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GST_PLUGIN_PATH", "SPGIM_"))}
    env["PATH"] = without_virtual_environments(env.get("PATH", ""))
    try:
        check_gstreamer(env)
        variables = gst_environment(env)
        verify_element(env, variables)
    except SpgimError as error:
        raise SystemExit(f"bench_gstreamer: {error}") from None
    env |= variables
    loader = find_loader(env)
    assert loader is not None  # check_gstreamer found it
    with tempfile.TemporaryDirectory(prefix="spgim-gst-bench-") as work:
        folder = Path(work)
        model = args.model or _export_live_pair(folder)
        clip = args.clip
        if clip is None:
            clip = folder / "clip.mp4"
            render = ["--frames", str(args.frames), "--size", "1280x720", "--fps", "25", "--seed", "0"]
            _run([*SPGIM, "data", "clip", "--out", str(clip), *render])
        frames = _count_frames(clip)
        engine = f"backend={args.backend} precision={args.precision}"
        rounds = []
        for _ in range(args.rounds):
            encoded = folder / "gst-composite.mp4" if args.encode else None
            gstreamer = _gstreamer_round(env, clip, frames, model, engine, encoded)
            matte = _matte_round(clip, model, args.backend, args.precision, folder)
            rounds.append({"gstreamer": gstreamer, "spgim_matte": matte})
    gst_fps = statistics.median(r["gstreamer"]["fps"] for r in rounds)
    matte_fps = statistics.median(r["spgim_matte"]["fps"] for r in rounds)
    report = {
        "clip": str(args.clip or f"spgim data clip 1280x720, {args.frames} frames at 25 fps"),
        "model": str(args.model or "the shipped live pair, ONNX fp32"),
        "backend": args.backend,
        "precision": args.precision,
        "gstreamer": "filesrc ! decodebin ! queue ! videoconvert ! spgimmatte output=composite post-messages=false ! "
        + (ENCODED_TAIL.format(out="gst-composite.mp4") if args.encode else "fakesink"),
        "spgim_matte": "--output composite.mp4 (H.264 encoding included)",
        "rounds": rounds,
        "gstreamer_fps": gst_fps,
        "spgim_matte_fps": matte_fps,
        "ratio": gst_fps / matte_fps if matte_fps else None,
        "machine": machine_facts(),
        "cpu_flags_line": flags_line(),
        "gstreamer_version": _run(["gst-launch-1.0", "--version"], env)[0].stdout.splitlines()[1].strip(),
        "element_python": loader_python(loader),  # the Python GStreamer's loader embeds, which runs the element
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
