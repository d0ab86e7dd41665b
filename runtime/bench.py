"""``spgim bench``: model-only latency and FLOP rate per backend and precision, against a ceiling.

For every backend x precision: latency p50/p90/p99, frames per second, achieved GFLOP/s from the
sidecars' FLOPs per frame, and, in the same run, the FLOP rate of torchvision's ResNet-50 at the
same size and precision on the same engine (ONNX Runtime or TorchScript) as a ceiling; then the
reduced/full precision speed-up and the alpha difference between them. JSON out, optional PNG.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError
from spgim.machine import cpu_facts, flags_line, machine_facts, native_bf16_missing

from .artifacts import load_artifacts
from .ceilings import CeilingOptions, ResNet50
from .matting import Matter
from .registry import backend_record, runnable
from .timing import time_calls


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def _infer_call(matter: Matter, image: np.ndarray) -> Callable[[], Any]:
    return lambda: matter.backend.infer(image)


def run_bench(
    model_dir: str | Path,
    *,
    backends: list[str],
    precisions: list[str],
    height: int,
    width: int,
    batch: int = 1,
    warmup: int = 2,
    iters: int = 10,
    threads: int = 0,
    gpu: int = 0,
) -> dict[str, Any]:
    """Benchmark every backend x precision this machine can run; returns the report written as JSON.

    A backend x precision that cannot run here (missing engine, no native bf16, no artifacts) is listed
    under ``skipped`` with its reason. Each row's ceiling is ResNet-50 on the row's own engine, device and
    precision (the record's ceiling runner in :mod:`.registry`).
    """
    if height % 32 or width % 32:
        raise SpgimError(f"bench size {width}x{height} must be multiples of 32")
    artifacts = load_artifacts(model_dir)
    rng = np.random.default_rng(0)
    image = rng.random((batch, 3, height, width), dtype=np.float32)
    resnet = ResNet50(height, width, batch)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    alphas: dict[tuple[str, str], np.ndarray] = {}
    for backend in backends:
        record = backend_record(backend)
        for precision in precisions:
            if precision not in record.precisions:
                continue
            reason = runnable(record, artifacts, precision)
            if reason is not None:
                skipped.append({"backend": backend, "precision": precision, "reason": reason})
                continue
            matter = Matter(
                model_dir,
                backend=backend,
                precision=precision,
                work_size=max(height, width),
                threads=threads,
                gpu=gpu,
            )
            flops = batch * sum(a.sidecar["flops_per_frame"] for a in (matter.spd_artifact, matter.spgm_artifact))
            export_w, export_h = matter.spgm_artifact.sidecar["export_size"]
            flops *= (height * width) / (export_h * export_w)  # the sidecar counts at the export size
            samples = time_calls(_infer_call(matter, image), warmup, iters)
            alphas[(backend, precision)] = matter.backend.infer(image)
            engine = matter.backend_name
            del matter  # large models' sessions hold gigabytes: free them before the ceiling runs
            p50 = statistics.median(samples)
            row: dict[str, Any] = {
                "backend": backend,
                "engine": engine,
                "device": record.device,
                "precision": precision,
                "latency_s": {"p50": p50, "p90": _percentile(samples, 90), "p99": _percentile(samples, 99)},
                "fps": batch / p50,
                "gflops_per_s": flops / p50 / 1e9,
                "resnet50_gflops_per_s": None,
                "resnet50_latency_s": None,
                "ratio_to_resnet50": None,
            }
            try:
                ceiling = record.ceiling(resnet, CeilingOptions(precision=precision, threads=threads, gpu=gpu))
            except SpgimError as missing:  # e.g. no C++ compiler for AOTInductor's ResNet-50: the row stays
                row["ceiling_unavailable"] = str(missing)
            else:
                resnet_samples = time_calls(ceiling, warmup, iters)
                resnet_p50 = statistics.median(resnet_samples)
                row["resnet50_gflops_per_s"] = resnet.flops / resnet_p50 / 1e9
                row["resnet50_latency_s"] = {"p50": resnet_p50, "p90": _percentile(resnet_samples, 90)}
                row["ratio_to_resnet50"] = row["gflops_per_s"] / row["resnet50_gflops_per_s"]
            rows.append(row)
    if not rows:
        reasons = "; ".join(f"{s['backend']} {s['precision']}: {s['reason']}" for s in skipped)
        raise SpgimError(f"nothing to bench on this machine: {reasons or 'no backend x precision asked'}")
    speedups = []
    for row in rows:
        full = next((r for r in rows if r["backend"] == row["backend"] and r["precision"] == "fp32"), None)
        if full is None or row is full:
            continue
        diff = np.abs(alphas[(row["backend"], row["precision"])] - alphas[(row["backend"], "fp32")])
        speedup = full["latency_s"]["p50"] / row["latency_s"]["p50"]
        # The same engine's ResNet-50 in the same two precisions: how much of what the hardware gives it, it gets.
        resnet_speedup = None
        if row["resnet50_latency_s"] is not None and full["resnet50_latency_s"] is not None:
            resnet_speedup = full["resnet50_latency_s"]["p50"] / row["resnet50_latency_s"]["p50"]
        speedups.append(
            {
                "backend": row["backend"],
                "reduced": row["precision"],
                "speedup": speedup,
                "resnet50_speedup": resnet_speedup,
                "speedup_over_resnet50_speedup": None if resnet_speedup is None else speedup / resnet_speedup,
                "alpha_abs_diff": {"mean": float(diff.mean()), "max": float(diff.max())},
            }
        )
    return {
        "model": str(model_dir),
        "size": [width, height],
        "batch": batch,
        "warmup": warmup,
        "iters": iters,
        "machine": machine_facts(),
        "cpu_flags_line": flags_line(),
        "resnet50_flops_per_batch": resnet.flops,
        "rows": rows,
        "skipped": skipped,
        "reduced_vs_full": speedups,
        "reduced_precision_note": _reduced_precision_note(),
        "summary": _summary(rows),
    }


def _reduced_precision_note() -> str | None:
    """On a CPU without native bf16 or fp16 arithmetic, the line saying int8 is the reduced precision that can win."""
    flags = cpu_facts()["flags"]
    if native_bf16_missing() is None or flags.get("avx512_fp16"):
        return None
    return (
        "this CPU has no native bf16 or fp16 arithmetic (no avx512_bf16, amx_bf16 or avx512_fp16): int8 is the only "
        "reduced precision that can run faster than fp32 here"
    )


def best_rates(rows: list[dict[str, Any]], precision: str) -> dict[str, Any] | None:
    """In one precision: the fastest model FLOP rate of any engine against the fastest ResNet-50 rate of any engine
    in that precision, and their ratio (the targets' form); None where no row of it has a ResNet-50 ceiling."""
    timed = [r for r in rows if r["precision"] == precision]
    with_ceiling = [r for r in timed if r["resnet50_gflops_per_s"] is not None]
    if not with_ceiling:
        return None
    model = max(timed, key=lambda r: r["gflops_per_s"])
    resnet = max(with_ceiling, key=lambda r: r["resnet50_gflops_per_s"])
    return {
        "model": {"backend": model["backend"], "gflops_per_s": model["gflops_per_s"]},
        "resnet50": {"backend": resnet["backend"], "gflops_per_s": resnet["resnet50_gflops_per_s"]},
        "ratio": model["gflops_per_s"] / resnet["resnet50_gflops_per_s"],
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets as measured: per precision, the best model rate against the best ResNet-50 rate of any engine;
    and the fastest reduced precision against the fastest fp32."""
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    rates = {precision: best_rates(rows, precision) for precision in precisions}
    summary: dict[str, Any] = {"best_rates": {p: rate for p, rate in rates.items() if rate is not None}}
    fp32 = [r for r in rows if r["precision"] == "fp32"]
    reduced = [r for r in rows if r["precision"] != "fp32"]
    if fp32 and reduced:
        best_reduced = min(reduced, key=lambda r: r["latency_s"]["p50"])
        best_full = min(fp32, key=lambda r: r["latency_s"]["p50"])
        summary["best_reduced_over_best_fp32_speed"] = {
            "reduced": best_reduced["engine"],
            "fp32": best_full["engine"],
            "speedup": best_full["latency_s"]["p50"] / best_reduced["latency_s"]["p50"],
        }
    return summary


def format_report(report: dict[str, Any]) -> str:
    """The bench table as text."""
    lines = [f"cpu: {report['cpu_flags_line']}"] if "cpu_flags_line" in report else []
    lines += [
        f"{'engine':<28}{'prec':>5}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'fps':>8}{'GFLOP/s':>9}"
        f"{'RN50':>8}{'ratio':>7}"
    ]
    for row in report["rows"]:
        latency = row["latency_s"]
        lines.append(
            f"{row['engine']:<28}{row['precision']:>5}{latency['p50'] * 1e3:>9.1f}{latency['p90'] * 1e3:>9.1f}"
            f"{latency['p99'] * 1e3:>9.1f}{row['fps']:>8.2f}{row['gflops_per_s']:>9.1f}"
            + (
                f"{row['resnet50_gflops_per_s']:>8.1f}{row['ratio_to_resnet50']:>7.2f}"
                if row["resnet50_gflops_per_s"] is not None
                else f"{'-':>8}{'-':>7}"
            )
        )
        if "ceiling_unavailable" in row:
            lines.append(f"  no ResNet-50 ceiling for {row['engine']}: {row['ceiling_unavailable']}")
    for item in report.get("skipped", []):
        lines.append(f"skipped {item['backend']} {item['precision']}: {item['reason']}")
    for precision, rate in report.get("summary", {}).get("best_rates", {}).items():
        lines.append(
            f"best {precision} model rate {rate['model']['gflops_per_s']:.1f} GFLOP/s ({rate['model']['backend']}) "
            f"vs best {precision} ResNet-50 rate {rate['resnet50']['gflops_per_s']:.1f} "
            f"({rate['resnet50']['backend']}): {rate['ratio']:.2f}"
        )
    for item in report["reduced_vs_full"]:
        resnet = item.get("resnet50_speedup")
        against = (
            f" (ResNet-50 {resnet:.2f}x on the same engine: {item['speedup_over_resnet50_speedup']:.2f} of it)"
            if resnet
            else ""
        )
        lines.append(
            f"{item['backend']}: {item['reduced']} vs fp32 speed-up {item['speedup']:.2f}x{against}, alpha diff "
            f"mean {item['alpha_abs_diff']['mean']:.2e} max {item['alpha_abs_diff']['max']:.2e}"
        )
    if report.get("reduced_precision_note"):
        lines.append(report["reduced_precision_note"])
    for video in report.get("video", []):
        lines.append(
            f"{video['engine']} {video['precision']} on {Path(video['clip']).name} ({video['frames']} frames, "
            f"{video['size'][0]}x{video['size'][1]} -> {video['work_size'][0]}x{video['work_size'][1]}): "
            f"end-to-end {video['end_to_end_fps']:.2f} fps vs model-only {video['model_fps']:.2f} fps, "
            f"ratio {video['ratio']:.2f}; keyframe interval {video['keyframe_interval']}, "
            f"upsampling {video.get('upsampling', 'bilinear')}"
        )
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Bars of SPG-IM and ResNet-50 GFLOP/s per backend x precision; with video rows, fps model-only vs end-to-end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['backend']}\n{r['precision']}" for r in report["rows"]]
    x = np.arange(len(labels))
    videos = report.get("video", [])
    columns = 2 if videos else 1
    figure, axes = plt.subplots(1, columns, figsize=(columns * max(6, 1.6 * len(labels)), 4), squeeze=False)
    axis = axes[0][0]
    axis.bar(x - 0.2, [r["gflops_per_s"] for r in report["rows"]], 0.4, label="SPG-IM")
    ceilings = [r["resnet50_gflops_per_s"] or 0.0 for r in report["rows"]]
    axis.bar(x + 0.2, ceilings, 0.4, label="ResNet-50 (ceiling)")
    for index, row in enumerate(report["rows"]):
        axis.annotate(f"{row['fps']:.2f} fps", (index - 0.2, row["gflops_per_s"]), ha="center", va="bottom", fontsize=8)
    axis.set_xticks(x, labels)
    axis.set_ylabel("GFLOP/s")
    width, height = report["size"]
    axis.set_title(f"spgim bench, {width}x{height}, batch {report['batch']}")
    axis.legend()
    if videos:
        right = axes[0][1]
        places = np.arange(len(videos))
        right.bar(places - 0.2, [v["model_fps"] for v in videos], 0.4, label="model only")
        right.bar(places + 0.2, [v["end_to_end_fps"] for v in videos], 0.4, label="end to end")
        for index, video in enumerate(videos):
            right.annotate(f"{video['ratio']:.2f}x", (index + 0.2, video["end_to_end_fps"]), ha="center", fontsize=8)
        right.set_xticks(places, [f"{v['backend']}\n{v['precision']}" for v in videos])
        right.set_ylabel("frames per second")
        right.set_title(f"{Path(videos[0]['clip']).name}, whole matte job")
        right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(report: dict[str, Any], json_path: Path | None, plot_path: Path | None) -> None:
    """Write the JSON and PNG outputs that were asked for."""
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if plot_path is not None:
        plot_path.parent.mkdir(parents=True, exist_ok=True)
        plot_report(report, plot_path)
