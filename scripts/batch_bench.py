"""Batch throughput and recovery: ``spgim batch`` (one and two CPUs per job) against a shell loop of
``spgim matte``, one node against two, the time from a node's death to its job running again, and the memory
of an idle node.

    .venv/bin/python scripts/batch_bench.py --model EXPORT [--clips 12] [--frames 100] [--size 640x360]
        [--backend onnxruntime] [--json batch-bench.json]

Clips come from ``spgim data clip`` (seeds 1000 and up). Every timing is one command's wall time, start-up
included (what a user waits for); the ratios are taken within this one run. The clusters are real Ray nodes
on 127.0.0.1 with one CPU each (``tests/ray_cluster.py``), killed by session at the end, never ``ray stop``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from ray_cluster import RayCluster  # noqa: E402

from spgim.cluster.ledger import LEDGER_FILE  # noqa: E402
from spgim.machine import cpu_facts  # noqa: E402

SPGIM = [sys.executable, "-m", "spgim"]


def _timed(command: list[str], env: dict[str, str] | None = None) -> float:
    began = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed: {done.stderr[-2000:]}")
    return time.monotonic() - began


def _pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _ledger(folder: Path) -> list[dict[str, Any]]:
    path = folder / LEDGER_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spgim-batch-bench-"))
    report: dict[str, Any] = {"cpu": cpu_facts(), "clips": args.clips, "frames": args.frames, "size": args.size}
    try:
        clips = []
        for index in range(args.clips):
            clip = work / "clips" / f"clip{index:02d}.mp4"
            clip.parent.mkdir(exist_ok=True)
            render = ["--frames", str(args.frames), "--size", args.size, "--fps", "25", "--seed", str(1000 + index)]
            subprocess.run([*SPGIM, "data", "clip", "--out", str(clip), *render], check=True, capture_output=True)
            clips.append(clip)
        common = ["--model", args.model, "--backend", args.backend, "--quiet"]

        def loop() -> float:
            out = work / "loop"
            out.mkdir(exist_ok=True)
            began = time.monotonic()
            for clip in clips:
                _timed([*SPGIM, "matte", str(clip), "--output", str(out / clip.name), *common])
            return time.monotonic() - began

        def batch(name: str, *extra: str, env: dict[str, str] | None = None) -> float:
            return _timed([*SPGIM, "batch", str(work / "clips"), "--out", str(work / name), *common, *extra], env)

        seconds = {"loop": loop(), "embedded": batch("embedded")}  # the default: one CPU per job
        seconds["embedded_2cpu"] = batch("embedded2", "--cpus-per-job", "2")
        with RayCluster(work / "cluster") as cluster:
            cluster.wait_for_nodes(1)
            seconds["one_node"] = batch("one", "--ray", cluster.address, "--cpus-per-job", "1", env=cluster.env())
            second = cluster.add_node(cpus=1)
            cluster.wait_for_nodes(2)
            time.sleep(5)
            report["idle_pss_mib"] = {"head": round(_pss_mib(cluster.nodes[0].pids()), 1),
                                      "worker_node": round(_pss_mib(second.pids()), 1)}  # fmt: skip
            seconds["two_nodes"] = batch("two", "--ray", cluster.address, "--cpus-per-job", "1", env=cluster.env())
            report["recovery_s"] = _recovery(cluster, second, work, clips, common)
        report["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
        report["files_per_min"] = {k: round(args.clips * 60 / v, 2) for k, v in seconds.items()}
        report["ratios"] = {
            "embedded_vs_loop": round(seconds["loop"] / seconds["embedded"], 3),
            "embedded_2cpu_vs_loop": round(seconds["loop"] / seconds["embedded_2cpu"], 3),
            "two_nodes_vs_one": round(seconds["one_node"] / seconds["two_nodes"], 3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def _recovery(cluster: RayCluster, node: Any, work: Path, clips: list[Path], common: list[str]) -> float | None:
    """Seconds from killing the node running a job to that job's next attempt starting on another."""
    out = work / "recovery"
    driver = subprocess.Popen([*SPGIM, "batch", *map(str, clips[:4]), "--out", str(out), *common, "--ray",
                               cluster.address, "--cpus-per-job", "1"], env=cluster.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    killed = victim = None
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        records = _ledger(out)
        if killed is None:
            ended = {r["key"] for r in records if r.get("status") in ("done", "failed")}
            running = [r for r in records if r.get("status") == "started" and r["key"] not in ended
                       and r["pid"] in node.pids()]  # fmt: skip
            if running:
                time.sleep(0.5)
                victim = running[0]["key"]
                node.kill()
                killed = time.monotonic()
        elif any(r.get("status") == "started" and r["key"] == victim and r["attempt"] == 2 for r in records):
            seconds = time.monotonic() - killed
            driver.wait(timeout=300)
            return round(seconds, 2)
        time.sleep(0.05)
    driver.wait(timeout=300)
    return None


if __name__ == "__main__":
    main()
