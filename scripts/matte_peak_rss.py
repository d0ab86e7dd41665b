"""Peak RSS of ``spgim matte`` per CPU backend on a 1280x720 clip at a 1280 working size (issue 10's memory target).

Each backend runs in its own ``spgim matte`` process; its peak resident set comes from ``os.wait4``'s
rusage of that one child, so one backend's peak never hides another's. Writes JSON with the CPU flags.

    .venv/bin/python scripts/matte_peak_rss.py --model /tmp/paper/model --frames 4 --json /tmp/paper/rss.json

The model folder must accept the working size (export with ``--dynamic --max-size 1280x1280``). Without
``--clip`` a 1280x720 clip is rendered with ``spgim data clip``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from spgim.machine import flags_line, machine_facts
from spgim.runtime.artifacts import load_artifacts
from spgim.runtime.registry import BACKENDS, runnable

SPGIM = [sys.executable, "-m", "spgim"]
TARGET_GIB = 3.0


def peak_rss(command: list[str]) -> tuple[int, float, int, str]:
    """(exit code, peak RSS in GiB, wall seconds, last stderr line) of one child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        lines = errors.read().decode(errors="replace").strip().splitlines()
    return child.returncode, usage.ru_maxrss / 2**20, round(time.perf_counter() - started), lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--clip", type=Path, help="a 1280x720 clip (default: rendered)")
    parser.add_argument("--frames", type=int, default=4, help="frames to matte (default 4)")
    parser.add_argument("--duration", type=float, help="with --clip: matte only its first seconds")
    parser.add_argument("--work-size", type=int, default=1280)
    parser.add_argument("--backends", help="comma list (default: every CPU backend that can run here)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    artifacts = load_artifacts(args.model)
    names = args.backends.split(",") if args.backends else [n for n, r in BACKENDS.items() if r.device == "cpu"]
    with tempfile.TemporaryDirectory(prefix="spgim-rss-") as folder:
        clip = args.clip
        if clip is None:
            clip = Path(folder) / "clip720.mp4"
            subprocess.run(
                [*SPGIM, "data", "clip", "--out", str(clip), "--frames", str(args.frames), "--size", "1280x720"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        rows = []
        for name in names:
            reason = runnable(BACKENDS[name], artifacts, "fp32")
            if reason is not None:
                rows.append({"backend": name, "skipped": reason})
                print(f"{name:<18} skipped: {reason}")
                continue
            command = [*SPGIM, "matte", str(clip), "--model", str(args.model), "--backend", name]
            command += ["--work-size", str(args.work_size), "--output", str(Path(folder) / f"{name}.mp4"), "--quiet"]
            if args.duration:
                command += ["--duration", str(args.duration)]
            code, gib, seconds, last = peak_rss(command)
            rows.append({"backend": name, "exit_code": code, "peak_rss_gib": gib, "wall_s": seconds, "last_line": last})
            verdict = "within" if gib <= TARGET_GIB else "OVER"
            print(f"{name:<18} exit {code}  peak RSS {gib:5.2f} GiB ({verdict} {TARGET_GIB} GiB)  {seconds} s  {last}")
    report = {
        "machine": machine_facts(),
        "cpu": flags_line(),
        "work_size": args.work_size,
        "clip": str(clip),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
