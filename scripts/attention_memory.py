"""Peak RSS of ONNX Runtime running the paper-config portable SPD + SPGM pair at 1280x704.

    .venv/bin/python scripts/attention_memory.py --work /tmp/memory --json memory.json

Makes a random-weight checkpoint pair, exports it once per ``--forms`` entry (``spgim export
--formats onnx --dynamic --min-size 64x64 --max-size 1280x1280 --attention FORM``), and runs
SPD then SPGM at the working size in a fresh process with the runtime's session options.
The peak is ``ru_maxrss`` of that process. Every step that needs torch runs in its own process
too: Linux carries a parent's RSS at fork into the child's ``ru_maxrss``, so this parent stays
small (its own peak is printed beside). Target: 3 GiB. Forms that store the whole N x M scores
(matmul, sdpa) need about 12.7 GB per score tensor at this size; do not run them on a shared
machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spgim.sizes import parse_size

TARGET_GIB = 3.0
SPGM_INPUTS = ("image", "mask", "r2", "r3", "r4")


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def make_pair(work: Path, config_name: str) -> None:
    """Random-weight SPD + SPGM checkpoints of ``config_name`` (seed 0), in ``work``."""
    import torch

    from spgim.train.checkpoint import save_checkpoint, weights_digest
    from spgim.train.config import get_config
    from spgim.train.models import build_model

    torch.manual_seed(0)
    config = get_config(config_name)
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    save_checkpoint(work / "spd.pt", branch="spd", config=config, model=spd)
    digest = weights_digest(spd.state_dict())
    save_checkpoint(work / "spgm.pt", branch="spgm", config=config, model=spgm, extra={"spd_digest": digest})


def run_pair(folder: Path, height: int, width: int, runs: int) -> dict[str, Any]:
    """SPD then SPGM on one random frame, as spgim.runtime's OnnxRuntimeBackend sets the sessions up."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    spd = ort.InferenceSession(str(folder / "spd.onnx"), options, providers=["CPUExecutionProvider"])
    spgm = ort.InferenceSession(str(folder / "spgm.onnx"), options, providers=["CPUExecutionProvider"])
    loaded = _peak_gib()
    image = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        features = spd.run(None, {"image": image})
        alpha = spgm.run(None, dict(zip(SPGM_INPUTS, [image, *features], strict=True)))[0]
        seconds.append(time.perf_counter() - started)
    assert alpha.shape == (1, 1, height, width) and np.isfinite(alpha).all()
    return {"seconds": seconds, "peak_after_load_gib": loaded, "peak_rss_gib": _peak_gib()}


def main() -> None:
    """Export each form, run it in a fresh process, print one line per form, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for checkpoints and exports (reused)")
    parser.add_argument("--config", default="paper")
    parser.add_argument("--size", default="1280x704", help="working size WxH")
    parser.add_argument("--forms", default="mha", help="comma list of portable attention forms (default mha)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--make-pair", action="store_true", help=argparse.SUPPRESS)  # internal steps
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = parse_size(args.size)
    if args.make_pair:
        make_pair(args.work, args.config)
        return
    if args.run:
        print(json.dumps(run_pair(args.run, height, width, args.runs)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, __file__, "--work", str(args.work), "--config", args.config, "--size", args.size]
    if not (args.work / "spgm.pt").is_file():
        subprocess.run([*me, "--make-pair"], check=True)
    spgim = str(Path(sys.executable).with_name("spgim"))
    rows = []
    for form in [f for f in args.forms.split(",") if f]:
        out = args.work / f"{form}-dynamic"
        if not (out / "spgim-export.json").is_file():
            command = [spgim, "export", "--spd", str(args.work / "spd.pt"), "--spgm", str(args.work / "spgm.pt")]
            command += ["--out", str(out), "--formats", "onnx", "--precision", "fp32", "--attention", form]
            command += ["--height", "512", "--width", "512", "--dynamic", "--min-size", "64x64"]
            subprocess.run([*command, "--max-size", "1280x1280"], check=True, capture_output=True)
        done = subprocess.run([*me, "--runs", str(args.runs), "--run", str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            killed = done.returncode == -9
            row: dict[str, Any] = {"form": form, "error": "killed" if killed else done.stderr.strip()[-300:]}
        else:
            row = {"form": form, **json.loads(done.stdout.strip().splitlines()[-1])}
            row["within_target"] = row["peak_rss_gib"] <= TARGET_GIB
        rows.append(row)
        if "error" in row:
            print(f"{form:<8} {width}x{height}: error: {row['error']}")
        else:
            print(
                f"{form:<8} {width}x{height}: peak RSS {row['peak_rss_gib']:.2f} GiB "
                f"(after loading {row['peak_after_load_gib']:.2f}), SPD+SPGM {min(row['seconds']):.1f} s, "
                f"target {TARGET_GIB} GiB {'met' if row['within_target'] else 'MISSED'}"
            )
    print(f"(this parent's own peak RSS: {_peak_gib():.2f} GiB)")
    if args.json is not None:
        payload = {"config": args.config, "size": [width, height], "target_gib": TARGET_GIB, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
