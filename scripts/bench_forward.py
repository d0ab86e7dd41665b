"""Median forward time of SPD + SPGM in eager PyTorch, fp32 and bf16 autocast (not a test).

    .venv/bin/python scripts/bench_forward.py --config paper --size 512x512 --iters 5 --json out.json

Weights are random: the arithmetic is what the trained model does. ``spgim bench`` (runtime
issue) measures exported artifacts; this script measures the model code itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
from typing import Any

import torch

from spgim.runtime.timing import time_calls
from spgim.sizes import parse_size
from spgim.train.config import get_config
from spgim.train.models import build_model
from spgim.train.summary import model_summary


def time_forward(config: dict[str, Any], height: int, width: int, dtype: str, warmup: int, iters: int) -> list[float]:
    """Seconds per SPD + SPGM forward of one frame, ``iters`` samples after ``warmup`` runs."""
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    image = torch.rand(1, 3, height, width)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        return time_calls(lambda: spgm(image, *spd(image)), warmup, iters)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper")
    parser.add_argument("--size", default="512x512", help="WxH")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    height, width = parse_size(args.size)
    config = get_config(args.config)
    flops = model_summary(config, height, width)["flops"]["total"]
    results: dict[str, Any] = {
        "config": args.config,
        "size": [width, height],
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "flops_per_frame": flops,
        "runs": {},
    }
    for dtype in args.dtypes.split(","):
        samples = time_forward(config, height, width, dtype, args.warmup, args.iters)
        median = statistics.median(samples)
        results["runs"][dtype] = {
            "median_s": median,
            "samples_s": samples,
            "gflops_per_s": flops / median / 1e9,
        }
        rate = flops / median / 1e9
        print(f"{args.config} {width}x{height} {dtype}: median {median:.3f} s/frame, {rate:.1f} GFLOP/s")
    if "fp32" in results["runs"] and "bf16" in results["runs"]:
        ratio = results["runs"]["fp32"]["median_s"] / results["runs"]["bf16"]["median_s"]
        results["bf16_speedup"] = ratio
        print(f"bf16 autocast speed-up over fp32: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
