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
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from spgim.runtime.artifacts import load_artifacts, select_pair

SPGM_INPUTS = ("image", "mask", "r2", "r3", "r4")


def _time(run: Callable[[], np.ndarray], warmup: int, iters: int) -> tuple[float, np.ndarray]:
    out = run()
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(iters):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), out


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


def main() -> None:
    """Run the study and print/write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma list of variant groups to skip: ort, torchscript")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
    artifacts = load_artifacts(args.model)
    cores = len(os.sched_getaffinity(0))
    rows: list[dict[str, Any]] = []

    def measure(group: str, name: str, run: Callable[[], np.ndarray]) -> None:
        p50, alpha = _time(run, args.warmup, args.iters)
        base = next((r for r in rows if r["group"] == group), None)
        row = {"group": group, "variant": name, "p50_ms": p50 * 1e3}
        if base is not None:
            row["speedup_vs_first"] = base["p50_ms"] / row["p50_ms"]
            row["alpha_max_abs_diff"] = float(np.abs(alpha - base["_alpha"]).max())
        row["_alpha"] = alpha
        rows.append(row)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "_alpha"}
        print(json.dumps(shown), flush=True)

    skip = set(args.skip.split(","))
    if "ort" not in skip:
        spd, spgm = (a.path for a in select_pair(artifacts, "onnx", "fp32"))
        level = ort.GraphOptimizationLevel
        measure("ort", "default (all, threads=default, sequential)", _ort_runner(spd, spgm, image))
        measure("ort", "threads=1", _ort_runner(spd, spgm, image, threads=1))
        measure("ort", f"threads={cores} (cores)", _ort_runner(spd, spgm, image, threads=cores))
        for label, value in (("disable", level.ORT_DISABLE_ALL), ("basic", level.ORT_ENABLE_BASIC)):
            measure("ort", f"optimisation={label}", _ort_runner(spd, spgm, image, level=value))
        measure("ort", "optimisation=extended", _ort_runner(spd, spgm, image, level=level.ORT_ENABLE_EXTENDED))
        measure("ort", "parallel execution", _ort_runner(spd, spgm, image, mode=ort.ExecutionMode.ORT_PARALLEL))
        measure("ort", "no spinning", _ort_runner(spd, spgm, image, spinning="0"))
        half = select_pair(artifacts, "onnx", "fp16")
        measure("ort", "fp16 graph", _ort_runner(half[0].path, half[1].path, image.astype(np.float16)))
    if "torchscript" not in skip:
        spd, spgm = (a.path for a in select_pair(artifacts, "torchscript", "fp32"))
        torch.set_num_threads(cores)
        for freeze, channels_last in ((False, False), (True, False), (False, True), (True, True)):
            name = f"freeze+optimize={freeze}, channels_last={channels_last}"
            runner = _torchscript_runner(
                spd, spgm, image, freeze=freeze, channels_last=channels_last, dtype=torch.float32
            )
            measure("torchscript", name, runner)
        torch.set_num_threads(1)
        runner = _torchscript_runner(spd, spgm, image, freeze=False, channels_last=False, dtype=torch.float32)
        measure("torchscript", "torch threads=1", runner)
        torch.set_num_threads(cores)
    for row in rows:
        row.pop("_alpha")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": str(args.model), "size": [width, height], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
