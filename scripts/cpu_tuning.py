"""The CPU tuning study behind the runtime's defaults: each choice timed on one export folder, one run.

    .venv/bin/python scripts/cpu_tuning.py --model MODEL_DIR --size 512x512 --iters 3 --json tuning.json

ONNX Runtime: threads (default / 1 / physical cores), graph optimisation level, sequential vs
parallel execution, spinning. TorchScript: the traced module as loaded vs frozen +
``optimize_for_inference`` (oneDNN fusion), contiguous vs channels-last, torch threads.
Every variant's alpha is compared with the baseline's so a faster variant that changes the
result is visible. Ratios are measured within one run; the machine is shared, repeat if noisy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from spgim.runtime.artifacts import load_artifacts, select_pair
from spgim.runtime.timing import time_calls
from spgim.sizes import parse_size

SPGM_INPUTS = ("image", "mask", "r2", "r3", "r4")


def _time(run: Callable[[], np.ndarray], warmup: int, iters: int) -> tuple[float, np.ndarray]:
    out = run()
    return statistics.median(time_calls(run, warmup, iters)), out


def _ort_runner(spd: Path, spgm: Path, image: np.ndarray, **options: Any) -> Callable[[], np.ndarray]:
    session_options = ort.SessionOptions()
    session_options.graph_optimization_level = options.get("level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    session_options.intra_op_num_threads = options.get("threads", 0)
    session_options.execution_mode = options.get("mode", ort.ExecutionMode.ORT_SEQUENTIAL)
    if "spinning" in options:
        session_options.add_session_config_entry("session.intra_op.allow_spinning", options["spinning"])
    first = ort.InferenceSession(str(spd), session_options, providers=["CPUExecutionProvider"])
    second = ort.InferenceSession(str(spgm), session_options, providers=["CPUExecutionProvider"])

    def run() -> np.ndarray:
        features = first.run(None, {"image": image})
        return np.asarray(second.run(None, dict(zip(SPGM_INPUTS, [image, *features], strict=True)))[0])

    return run


def _torchscript_runner(
    spd: Path, spgm: Path, image: np.ndarray, *, freeze: bool, channels_last: bool, dtype: torch.dtype
) -> Callable[[], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = torch.jit.load(str(spd), map_location="cpu").eval().to(dtype)
        second = torch.jit.load(str(spgm), map_location="cpu").eval().to(dtype)
    x = torch.from_numpy(image).to(dtype)
    if channels_last:
        first, second = first.to(memory_format=torch.channels_last), second.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if freeze:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = torch.jit.optimize_for_inference(torch.jit.freeze(copy.copy(first)))
            second = torch.jit.optimize_for_inference(torch.jit.freeze(copy.copy(second)))

    def run() -> np.ndarray:
        with torch.inference_mode():
            return second(x, *first(x)).float().contiguous().numpy()

    return run


def _variants(artifacts: list[Any], image: np.ndarray, cores: int) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Variant name -> (group, a factory of its zero-argument runner); the first of each group is its baseline."""
    level = ort.GraphOptimizationLevel
    spd, spgm = (a.path for a in select_pair(artifacts, "onnx", "fp32"))
    half = [a.path for a in select_pair(artifacts, "onnx", "fp16")]
    ts_spd, ts_spgm = (a.path for a in select_pair(artifacts, "torchscript", "fp32"))

    def script(freeze: bool, channels_last: bool, threads: int) -> Callable[[], np.ndarray]:
        torch.set_num_threads(threads)
        return _torchscript_runner(
            ts_spd, ts_spgm, image, freeze=freeze, channels_last=channels_last, dtype=torch.float32
        )

    return {
        "ort: default (all, threads=default, sequential)": ("ort", lambda: _ort_runner(spd, spgm, image)),
        "ort: threads=1": ("ort", lambda: _ort_runner(spd, spgm, image, threads=1)),
        f"ort: threads={cores} (cores)": ("ort", lambda: _ort_runner(spd, spgm, image, threads=cores)),
        "ort: optimisation=disable": ("ort", lambda: _ort_runner(spd, spgm, image, level=level.ORT_DISABLE_ALL)),
        "ort: optimisation=basic": ("ort", lambda: _ort_runner(spd, spgm, image, level=level.ORT_ENABLE_BASIC)),
        "ort: optimisation=extended": (
            "ort",
            lambda: _ort_runner(spd, spgm, image, level=level.ORT_ENABLE_EXTENDED),
        ),
        "ort: parallel execution": ("ort", lambda: _ort_runner(spd, spgm, image, mode=ort.ExecutionMode.ORT_PARALLEL)),
        "ort: no spinning": ("ort", lambda: _ort_runner(spd, spgm, image, spinning="0")),
        "ort: fp16 graph": ("ort", lambda: _ort_runner(half[0], half[1], image.astype(np.float16))),
        "torchscript: as loaded": ("torchscript", lambda: script(False, False, cores)),
        "torchscript: freeze+optimize_for_inference": ("torchscript", lambda: script(True, False, cores)),
        "torchscript: channels_last": ("torchscript", lambda: script(False, True, cores)),
        "torchscript: freeze+optimize, channels_last": ("torchscript", lambda: script(True, True, cores)),
        "torchscript: torch threads=1": ("torchscript", lambda: script(False, False, 1)),
    }


def main() -> None:
    """Run every variant in its own process (the paper config's sessions hold gigabytes) and collect the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--only", default="", help="comma list of groups to run: ort, torchscript (default both)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, write its result
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = parse_size(args.size)
    image = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    cores = len(os.sched_getaffinity(0))
    variants = _variants(load_artifacts(args.model), image, cores)
    if args.variant is not None:
        p50, alpha = _time(variants[args.variant][1](), args.warmup, args.iters)
        np.save(args.result, alpha)
        print(json.dumps({"p50_ms": p50 * 1e3}))
        return
    groups = set(args.only.split(",")) if args.only else {"ort", "torchscript"}
    rows: list[dict[str, Any]] = []
    baselines: dict[str, tuple[float, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (group, _) in variants.items():
            if group not in groups:
                continue
            result = Path(folder) / "alpha.npy"
            command = [sys.executable, __file__, "--model", str(args.model), "--size", args.size]
            command += ["--warmup", str(args.warmup), "--iters", str(args.iters), "--variant", name]
            done = subprocess.run([*command, "--result", str(result)], capture_output=True, text=True, check=False)
            if done.returncode != 0:
                row: dict[str, Any] = {"group": group, "variant": name, "error": done.stderr.strip()[-300:]}
            else:
                p50 = json.loads(done.stdout.strip().splitlines()[-1])["p50_ms"]
                alpha = np.load(result)
                row = {"group": group, "variant": name, "p50_ms": p50}
                if group in baselines:
                    row["speedup_vs_first"] = baselines[group][0] / p50
                    row["alpha_max_abs_diff"] = float(np.abs(alpha - baselines[group][1]).max())
                else:
                    baselines[group] = (p50, alpha)
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"model": str(args.model), "size": [width, height], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
