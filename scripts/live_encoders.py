"""Per-frame time of SPD and SPGM designs for the ``live`` configuration, in ONNX Runtime on the CPU.

Each candidate is a model configuration with random weights (speed needs shapes, not training):
SPD and SPGM are exported to portable ONNX as ``spgim export --dynamic`` does
(:func:`spgim.export.onnx_graphs.export_onnx`, opset 17, ``mha`` attention) and run in ONNX Runtime
with ``--threads`` intra-op threads (spinning off, as ``spgim matte`` runs) at each working size.
After ``--warmup`` calls, every graph is timed ``--calls`` times per round for ``--rounds`` rounds
that go round all candidates, so load from other work on a shared machine falls on all of them
alike; the table gives the median and the minimum wall time of those calls, and the median process
CPU time divided by the threads (what a call would take with the cores to itself). SPD runs only on
keyframes in a stream, SPGM on every frame: ``frame`` is SPGM + SPD / K.

    .venv/bin/python scripts/live_encoders.py --out live-encoders.json
    .venv/bin/python scripts/live_encoders.py --candidates live,tiny --sizes 512x288 --rounds 6

A candidate is a configuration name (``live``, ``tiny``, ..) or a name of :data:`CANDIDATES`, each
``live`` with one design choice changed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spgim.export.io_spec import spd_spec, spgm_spec
from spgim.export.onnx_graphs import export_onnx
from spgim.runtime.backends import session_options
from spgim.sizes import parse_size
from spgim.train.config import MODEL_CONFIGS, get_config
from spgim.train.models import build_model, guide_channels
from spgim.train.summary import model_summary

# Variants of ``live``: {section: {field: value}} applied on top of it.
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    # SPD front-end
    "spd-large-0.75": {"spd": {"width_mult": 0.75}},
    "spd-small": {"spd": {"arch": "small"}},
    # SPGM encoder
    "spgm-small-0.75": {"spgm": {"width_mult": 0.75}},
    "spgm-large-0.5": {"spgm": {"arch": "large", "width_mult": 0.5}},
    "spgm-resnet18-16": {"spgm": {"encoder": "resnet", "depth": 18, "width": 16}},
    # SPGM decoder: widths [OS16, OS8, OS4, last level], and where the last level runs
    "dec-24": {"spgm": {"decoder_channels": [24, 16, 8, 4]}},
    "dec-c1-8": {"spgm": {"decoder_channels": [16, 16, 8, 8]}},
    "dec-wide": {"spgm": {"decoder_channels": [32, 24, 16, 8]}},
    "refine-os1": {"spgm": {"refine_stride": 1}},
    # where TST attends
    "tst-res3-res4": {"spgm": {"tst_stages": ["res3", "res4"], "tst_kv_stride": 2}},
}
DEFAULT_CANDIDATES = ["live", "tiny", *CANDIDATES]


def candidate_config(name: str) -> dict[str, Any]:
    """The configuration of a candidate name (a :data:`CANDIDATES` key or a configuration name)."""
    if name in MODEL_CONFIGS:
        return get_config(name)
    if name not in CANDIDATES:
        raise SystemExit(f"unknown candidate {name!r}; choose from {', '.join([*MODEL_CONFIGS, *CANDIDATES])}")
    config = get_config("live")
    for section, fields in CANDIDATES[name].items():
        if section not in ("spd", "spgm"):
            raise SystemExit(f"candidate {name}: unknown section {section}")
        if fields.get("encoder") == "resnet":
            for key in ("arch", "width_mult"):
                config[section].pop(key, None)
        config[section].update(copy.deepcopy(fields))
    config["name"] = name
    return config


def export_pair(config: dict[str, Any], folder: Path, seed: int) -> tuple[Path, Path]:
    """Random-weight SPD and SPGM of ``config`` as dynamic-size portable ONNX graphs in ``folder``."""
    torch.manual_seed(seed)
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    channels = guide_channels(config)
    specs = {"spd": spd_spec(channels), "spgm": spgm_spec(channels)}
    (image,) = specs["spd"].dummy_inputs(224, 384)
    with torch.no_grad():
        examples = {"spd": (image,), "spgm": (image, *spd(image))}
    paths = {}
    for branch, model in (("spd", spd), ("spgm", spgm)):
        paths[branch] = folder / f"{branch}.onnx"
        export_onnx(model, specs[branch], examples[branch], paths[branch], flavour="portable", opset=17, dynamic=True)
    return paths["spd"], paths["spgm"]


@dataclass
class Timing:
    """The calls of one graph of one candidate at one size, timed in rounds across all candidates."""

    candidate: str
    size: tuple[int, int]  # (height, width)
    branch: str
    session: Any
    feeds: dict[str, np.ndarray]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def run(self, calls: int) -> None:
        for _ in range(calls):
            start, start_cpu = time.perf_counter(), time.process_time()
            self.session.run(None, self.feeds)
            self.wall.append(1000.0 * (time.perf_counter() - start))
            self.cpu.append(1000.0 * (time.process_time() - start_cpu))


def prepare(name: str, args: argparse.Namespace, sizes: list[tuple[int, int]], folder: Path) -> list[Timing]:
    """Export a candidate, open both graphs in ONNX Runtime and warm them up at every size."""
    import onnxruntime as ort

    config = candidate_config(name)
    (folder / name).mkdir()
    spd_path, spgm_path = export_pair(config, folder / name, args.seed)
    options = session_options(threads=args.threads, spinning=args.spinning)
    spd = ort.InferenceSession(str(spd_path), options, providers=["CPUExecutionProvider"])
    spgm = ort.InferenceSession(str(spgm_path), options, providers=["CPUExecutionProvider"])
    timings = []
    for height, width in sizes:
        image = np.random.default_rng(args.seed).random((1, 3, height, width), dtype=np.float32)
        features = dict(zip(("mask", "r2", "r3", "r4"), spd.run(None, {"image": image}), strict=True))
        # The exporter leaves out graph inputs the model never reads (r2 when TST skips res2).
        feeds = {i.name: {"image": image, **features}[i.name] for i in spgm.get_inputs()}
        for branch, session, inputs in (("spd", spd, {"image": image}), ("spgm", spgm, feeds)):
            timing = Timing(name, (height, width), branch, session, inputs)
            for _ in range(args.warmup):
                session.run(None, inputs)
            timings.append(timing)
    return timings


def rows_of(names: list[str], sizes: list[tuple[int, int]], timings: list[Timing]) -> list[dict[str, Any]]:
    """One row per candidate and size: medians and minima of wall and CPU time, GFLOPs, parameters."""
    by_key = {(t.candidate, t.size, t.branch): t for t in timings}
    rows = []
    for name in names:
        config = candidate_config(name)
        for height, width in sizes:
            summary = model_summary(config, height, width)
            row: dict[str, Any] = {"candidate": name, "size": [width, height]}
            for branch in ("spd", "spgm"):
                timing = by_key[(name, (height, width), branch)]
                row[f"{branch}_ms"] = round(statistics.median(timing.wall), 2)
                row[f"{branch}_min_ms"] = round(min(timing.wall), 2)
                row[f"{branch}_cpu_ms"] = round(statistics.median(timing.cpu), 2)
                row[f"{branch}_calls"] = len(timing.wall)
            row["params_m"] = {k: round(v / 1e6, 3) for k, v in summary["params"].items()}
            row["gflops"] = {k: round(v / 1e9, 3) for k, v in summary["flops"].items()}
            row["config"] = {section: config[section] for section in ("spd", "spgm")}
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]], keyframe_interval: int, threads: int) -> str:
    """Wall-clock medians and minima, CPU time / threads, and a frame's model time at keyframe interval K.

    ``frame`` is SPGM plus SPD spread over K frames, from the wall-clock minima (the closest a
    shared machine gets to an idle one).
    """
    lines = [
        f"{'candidate':<16}{'WxH':>9}{'SPD med':>9}{'SPGM med':>9}{'SPD min':>9}{'SPGM min':>9}"
        f"{'SPD cpu/t':>10}{'SPGM cpu/t':>11}{f'frame K={keyframe_interval}':>10}{'SPD GF':>8}{'SPGM GF':>8}"
        f"{'SPD Mp':>8}{'SPGM Mp':>8}"
    ]
    for row in rows:
        frame = row["spgm_min_ms"] + row["spd_min_ms"] / max(1, keyframe_interval)
        lines.append(
            f"{row['candidate']:<16}{'x'.join(map(str, row['size'])):>9}{row['spd_ms']:>9.1f}{row['spgm_ms']:>9.1f}"
            f"{row['spd_min_ms']:>9.1f}{row['spgm_min_ms']:>9.1f}{row['spd_cpu_ms'] / threads:>10.1f}"
            f"{row['spgm_cpu_ms'] / threads:>11.1f}{frame:>10.1f}{row['gflops']['spd']:>8.2f}"
            f"{row['gflops']['spgm']:>8.2f}{row['params_m']['spd']:>8.2f}{row['params_m']['spgm']:>8.2f}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--candidates", default=",".join(DEFAULT_CANDIDATES), help="comma-separated candidates (default: all)"
    )
    parser.add_argument("--sizes", default="512x288,384x224", help="working sizes WxH (default 512x288,384x224)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default 2)")
    parser.add_argument("--spinning", action="store_true", help="let idle ONNX Runtime threads spin (default off)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per graph and size first (default 3)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds over all candidates (default 4)")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per graph, size and round (default 3)")
    parser.add_argument("--keyframe-interval", type=int, default=8, help="K for the frame column (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the setup and rows as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.candidates.split(",")
    for name in names:
        candidate_config(name)  # fail on a wrong name before exporting anything
    sizes = [parse_size(text) for text in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        timings = [timing for name in names for timing in prepare(name, args, sizes, Path(folder))]
        # Round-robin over every candidate, so that load from other work on a shared machine
        # falls on all of them alike instead of on whichever ran while it peaked.
        load = []
        for index in range(args.rounds):
            for timing in timings:
                timing.run(args.calls)
            load.append(os.getloadavg()[0])
            print(f"round {index + 1}/{args.rounds} done, load average {load[-1]:.1f}", file=sys.stderr)
    rows = rows_of(names, sizes, timings)
    print(format_table(rows, args.keyframe_interval, args.threads))
    if args.out is not None:
        import onnxruntime as ort

        setup = {
            "threads": args.threads,
            "spinning": args.spinning,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "calls_per_round": args.calls,
            "load_average": load,
            "cpu_count": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "torch": torch.__version__,
            "command": sys.argv,
        }
        args.out.write_text(json.dumps({"setup": setup, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
