"""Which portable attention form each CPU engine runs fastest: SPGM graph, time and peak RSS.

    .venv/bin/python scripts/attention_forms.py --work /tmp/forms --size 512x512 --json forms.json

Exports a random-weight SPD + SPGM pair of ``--config`` (default paper) once per attention form
(``spgim export --formats onnx --attention FORM``), then runs the SPGM graph of each form on each
engine, each in its own process: ONNX Runtime CPU with the runtime's session options, and
OpenVINO CPU (``Core().compile_model(onnx, "CPU")``). SPGM's inputs are random tensors of the
spec's shapes: nothing in SPGM's cost depends on their values. A row gives the median seconds per
SPGM call, the process's RSS after loading and its peak (VmHWM) after the calls, and for
OpenVINO which attention-like nodes its compiled runtime model holds (a fused attention shows up
as a ``ScaledDotProductAttention`` node or a snippets ``Subgraph`` that swallowed the Softmax;
an unfused one as a separate ``Softmax``). The machine is shared: repeat a surprising row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from spgim.sizes import parse_size

ENGINES = ("onnxruntime", "openvino")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_facts() -> dict[str, Any]:
    """Model name and the vector/matrix flags that decide which kernels the engines pick."""
    text = Path("/proc/cpuinfo").read_text()
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        elif line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
    return {
        "model": model,
        "cores": len(os.sched_getaffinity(0)),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
    }


def _rss_gib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_gib() -> float:
    """Peak RSS of this process's address space (VmHWM).

    Not ``ru_maxrss`` alone: Linux carries the parent's RSS at fork into the child's ``ru_maxrss``
    across exec, and the parent here holds torch and a model.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_inputs(path: Path, config_name: str, height: int, width: int, precision: str) -> None:
    """SPGM's inputs as an ``.npz``, made here so the measured processes need not import torch."""
    from spgim.export.io_spec import spgm_spec
    from spgim.train.config import get_config
    from spgim.train.models import guide_channels

    spec = spgm_spec(guide_channels(get_config(config_name)))
    dtype = np.float16 if precision == "fp16" else np.float32
    arrays = {
        t.name: x.numpy().astype(dtype) for t, x in zip(spec.inputs, spec.dummy_inputs(height, width), strict=True)
    }
    np.savez(path, **arrays)


def _onnxruntime_runner(model: Path, threads: int) -> tuple[Any, dict[str, Any]]:
    import onnxruntime as ort

    # The session options of spgim.runtime.backends.OnnxRuntimeBackend.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return lambda feed: session.run(None, feed)[0], {"onnxruntime": ort.__version__}


def _openvino_runner(model: Path, threads: int) -> tuple[Any, dict[str, Any]]:
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    compiled = core.compile_model(str(model), "CPU", config)
    types: Counter[str] = Counter()
    fused: list[str] = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        types[layer] += 1
        originals = info["originalLayersNames"].astype(str)
        if layer == "ScaledDotProductAttention" or (layer == "Subgraph" and "Softmax" in originals):
            fused.append(f"{layer}: {originals[:160]}")
    facts = {
        "openvino": ov.__version__,
        "inference_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
        "runtime_ops": {
            k: types[k]
            for k in ("ScaledDotProductAttention", "Subgraph", "Softmax", "MatMul", "TensorIterator")
            if types[k]
        },
        "fused_attention": fused,
    }
    request = compiled.create_infer_request()
    return lambda feed: request.infer(feed)[0], facts


def child(args: argparse.Namespace) -> None:
    """Load one graph on one engine, time ``--runs`` calls after one warm-up, print one JSON line."""
    with np.load(args.inputs) as arrays:
        feed = {name: arrays[name] for name in arrays.files}
    started = time.perf_counter()
    runner, facts = {"onnxruntime": _onnxruntime_runner, "openvino": _openvino_runner}[args.engine](
        args.model, args.threads
    )
    load_s = time.perf_counter() - started
    loaded_rss = _rss_gib()
    first = time.perf_counter()
    alpha = np.asarray(runner(feed), dtype=np.float32)
    first_s = time.perf_counter() - first
    samples, cpu_samples = [], []
    for _ in range(args.runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        runner(feed)
        samples.append(time.perf_counter() - started)
        cpu_samples.append(time.process_time() - cpu_started)
    result = {
        "threads": args.threads,
        "load_s": load_s,
        "first_s": first_s,
        "seconds": min(samples),
        "median_s": statistics.median(samples),
        "samples": samples,
        "cpu_seconds": min(cpu_samples),
        "cpu_samples": cpu_samples,
        "loaded_rss_gib": loaded_rss,
        "peak_rss_gib": _peak_gib(),
        "alpha_mean": float(alpha.mean()),
        **facts,
    }
    np.save(args.model.parent / f"alpha.{args.engine}.{args.precision}.npy", alpha)
    print(json.dumps(result), flush=True)


def export_forms(work: Path, config_name: str, height: int, width: int, forms: list[str], precision: str) -> None:
    """A random-weight checkpoint pair and one ``spgim export`` per form, skipping graphs already there."""
    import torch

    from spgim.cli import main as spgim
    from spgim.train.checkpoint import save_checkpoint, weights_digest
    from spgim.train.config import get_config
    from spgim.train.models import build_model

    work.mkdir(parents=True, exist_ok=True)
    spd_path, spgm_path = work / "spd.pt", work / "spgm.pt"
    if not spgm_path.is_file():
        torch.manual_seed(0)
        config = get_config(config_name)
        spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
        save_checkpoint(spd_path, branch="spd", config=config, model=spd)
        digest = weights_digest(spd.state_dict())
        save_checkpoint(spgm_path, branch="spgm", config=config, model=spgm, extra={"spd_digest": digest})
    for form in forms:
        out = work / f"{form}-{width}x{height}"
        if (out / ("spgm.fp16.onnx" if precision == "fp16" else "spgm.onnx")).is_file():
            continue
        command = ["export", "--spd", str(spd_path), "--spgm", str(spgm_path), "--out", str(out)]
        command += ["--formats", "onnx", "--precision", precision, "--attention", form]
        command += ["--height", str(height), "--width", str(width)]
        print(f"exporting {form} ...", flush=True)
        if spgim(command) != 0:
            raise SystemExit(f"spgim export failed for {form}")


def main() -> None:
    """Export each form, run each form x engine in its own process, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="folder for checkpoints and exports (reused)")
    parser.add_argument("--config", default="paper")
    parser.add_argument("--size", default="512x512", help="WxH")
    parser.add_argument("--forms", default="mha,blocked,sdpa,matmul")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--runs", type=int, default=3, help="timed calls per process, after one warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="times to run the whole form x engine matrix")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the engine's default)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per form x engine process")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # internal: the child process
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        child(args)
        return
    height, width = parse_size(args.size)
    forms = [f for f in args.forms.split(",") if f]
    engines = [e for e in args.engines.split(",") if e]
    export_forms(args.work, args.config, height, width, forms, args.precision)
    suffix = ".fp16.onnx" if args.precision == "fp16" else ".onnx"
    inputs = args.work / f"inputs-{width}x{height}.{args.precision}.npz"
    write_inputs(inputs, args.config, height, width, args.precision)
    rows: list[dict[str, Any]] = []
    # Rounds interleave the rows so that a burst of load from other jobs on a shared machine
    # hits every row alike; the table keeps each row's fastest round.
    for _round, form, engine in ((r, f, e) for r in range(args.rounds) for f in forms for e in engines):
        model = args.work / f"{form}-{width}x{height}" / f"spgm{suffix}"
        row = {"form": form, "engine": engine, "precision": args.precision, **_measure(args, engine, model, inputs)}
        rows.append(row)
        print(_format_row(row), flush=True)
    best = _best_rows(rows, forms, engines)
    print()
    print(_table(best))
    if args.json is not None:
        payload = {"config": args.config, "size": [width, height], "cpu": cpu_facts(), "best": best, "rows": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


def _measure(args: argparse.Namespace, engine: str, model: Path, inputs: Path) -> dict[str, Any]:
    """One form x engine in a child process: its JSON line, or an ``error``."""
    command = [sys.executable, __file__, "--work", str(args.work), "--inputs", str(inputs)]
    command += ["--precision", args.precision, "--runs", str(args.runs), "--threads", str(args.threads)]
    command += ["--engine", engine, "--model", str(model)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    if done.returncode == -9:
        return {"error": "killed (out of memory?)"}
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-300:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _best_rows(rows: list[dict[str, Any]], forms: list[str], engines: list[str]) -> list[dict[str, Any]]:
    """Per form x engine, the round with the fastest call (or the last error when every round failed)."""
    best = []
    for form in forms:
        for engine in engines:
            mine = [r for r in rows if r["form"] == form and r["engine"] == engine]
            timed = [r for r in mine if "error" not in r]
            if timed:
                fastest = dict(min(timed, key=lambda r: r["seconds"]))
                fastest["peak_rss_gib"] = max(r["peak_rss_gib"] for r in timed)
                fastest["cpu_seconds"] = min(r["cpu_seconds"] for r in timed)
                best.append(fastest)
            else:
                best.append(mine[-1])
    return best


def _format_row(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['form']:<8} {row['engine']:<12} {row['precision']:<5} error: {row['error']}"
    fused = len(row.get("fused_attention", [])) if row["engine"] == "openvino" else "-"
    return (
        f"{row['form']:<8} {row['engine']:<12} {row['precision']:<5} {row['seconds']:8.2f} s "
        f"(cpu {row['cpu_seconds']:6.2f} s) {row['peak_rss_gib']:7.2f} GiB peak "
        f"{row['loaded_rss_gib']:6.2f} GiB loaded  fused {fused}"
    )


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| form | engine | precision | s / SPGM call (fastest) | CPU s / call | peak RSS GiB | RSS after load GiB "
        "| OpenVINO fused attentions |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['form']} | {row['engine']} | {row['precision']} | {row['error'][:60]} | | | | |")
            continue
        fused = str(len(row["fused_attention"])) if row["engine"] == "openvino" else "-"
        lines.append(
            f"| {row['form']} | {row['engine']} | {row['precision']} | {row['seconds']:.2f} | "
            f"{row['cpu_seconds']:.2f} | {row['peak_rss_gib']:.2f} | {row['loaded_rss_gib']:.2f} | {fused} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
