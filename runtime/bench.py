"""``spgim bench``: model-only latency and FLOP rate per backend and precision, against a ceiling.

For every backend x precision: latency p50/p90/p99, frames per second, achieved GFLOP/s from the
sidecars' FLOPs per frame, and, in the same run, the FLOP rate of torchvision's ResNet-50 at the
same size and precision on the same engine (ONNX Runtime or TorchScript) as a ceiling; then the
reduced/full precision speed-up and the alpha difference between them. JSON out, optional PNG.
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError

from .matting import BACKENDS, Matter


def _percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def time_calls(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` for ``iters`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


class ResNet50Ceiling:
    """torchvision's ResNet-50 (random weights) on the same engine and precision as a bench row."""

    def __init__(self, height: int, width: int, batch: int) -> None:
        import torch
        import torchvision
        from torch.utils.flop_counter import FlopCounterMode

        self.torch = torch
        self.model = torchvision.models.resnet50().eval()
        self.image = torch.rand(batch, 3, height, width)
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            torchvision.models.resnet50().eval()(torch.empty(batch, 3, height, width))
        self.flops = counter.get_total_flops()
        self._folder = tempfile.TemporaryDirectory(prefix="spgim-resnet50-")
        self._onnx: dict[str, Path] = {}

    def runner(self, backend: str, precision: str, threads: int) -> Callable[[], Any]:
        """A zero-argument call that runs one batch of ResNet-50 like ``backend`` runs SPG-IM."""
        torch = self.torch
        if backend == "torchscript":
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            # A copy: Module.to converts parameters in place, and the next row needs fp32 weights again.
            # Channels-last like TorchScriptBackend, so the ceiling runs as SPG-IM's rows do.
            image = self.image.to(dtype).contiguous(memory_format=torch.channels_last)
            model = copy.deepcopy(self.model).to(dtype).to(memory_format=torch.channels_last)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks TorchScript deprecated
                traced = torch.jit.trace(model, image, check_trace=False)

            def run_torchscript() -> Any:
                with torch.inference_mode():
                    return traced(image)

            return run_torchscript
        import onnxruntime as ort

        path = self._export_onnx(precision)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"image": self.image.numpy().astype(np.float16 if precision == "fp16" else np.float32)}
        return lambda: session.run(None, feed)

    def _export_onnx(self, precision: str) -> Path:
        if precision in self._onnx:
            return self._onnx[precision]
        import onnx

        torch = self.torch
        path = Path(self._folder.name) / "resnet50.onnx"
        if not path.is_file():
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    self.model,
                    (self.image,),
                    str(path),
                    dynamo=False,
                    opset_version=17,
                    input_names=["image"],
                    output_names=["logits"],
                )
        if precision == "fp16":
            from onnxconverter_common import float16

            half = Path(self._folder.name) / "resnet50.fp16.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx.save(float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=False), str(half))
            path = half
        self._onnx[precision] = path
        return path


def _caller(matter: Matter, image: np.ndarray) -> Callable[[], Any]:
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
) -> dict[str, Any]:
    """Benchmark every available backend x precision; returns the report written as JSON."""
    if height % 32 or width % 32:
        raise SpgimError(f"bench size {width}x{height} must be multiples of 32")
    rng = np.random.default_rng(0)
    image = rng.random((batch, 3, height, width), dtype=np.float32)
    ceiling = ResNet50Ceiling(height, width, batch)
    rows: list[dict[str, Any]] = []
    alphas: dict[tuple[str, str], np.ndarray] = {}
    for backend in backends:
        if backend not in BACKENDS:
            raise SpgimError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        for precision in precisions:
            if precision not in BACKENDS[backend][1]:
                continue
            matter = Matter(
                model_dir, backend=backend, precision=precision, work_size=max(height, width), threads=threads
            )
            flops = batch * sum(a.sidecar["flops_per_frame"] for a in (matter.spd_artifact, matter.spgm_artifact))
            export_w, export_h = matter.spgm_artifact.sidecar["export_size"]
            flops *= (height * width) / (export_h * export_w)  # the sidecar counts at the export size
            samples = time_calls(_caller(matter, image), warmup, iters)
            alphas[(backend, precision)] = matter.backend.infer(image)
            resnet = time_calls(ceiling.runner(backend, precision, threads), warmup, iters)
            p50, resnet_p50 = statistics.median(samples), statistics.median(resnet)
            row = {
                "backend": backend,
                "engine": matter.backend_name,
                "precision": precision,
                "latency_s": {"p50": p50, "p90": _percentile(samples, 90), "p99": _percentile(samples, 99)},
                "fps": batch / p50,
                "gflops_per_s": flops / p50 / 1e9,
                "resnet50_gflops_per_s": ceiling.flops / resnet_p50 / 1e9,
            }
            row["ratio_to_resnet50"] = row["gflops_per_s"] / row["resnet50_gflops_per_s"]
            rows.append(row)
    speedups = []
    for row in rows:
        full = next((r for r in rows if r["backend"] == row["backend"] and r["precision"] == "fp32"), None)
        if full is None or row is full:
            continue
        diff = np.abs(alphas[(row["backend"], row["precision"])] - alphas[(row["backend"], "fp32")])
        speedups.append(
            {
                "backend": row["backend"],
                "reduced": row["precision"],
                "speedup": full["latency_s"]["p50"] / row["latency_s"]["p50"],
                "alpha_abs_diff": {"mean": float(diff.mean()), "max": float(diff.max())},
            }
        )
    return {
        "model": str(model_dir),
        "size": [width, height],
        "batch": batch,
        "warmup": warmup,
        "iters": iters,
        "resnet50_flops_per_batch": ceiling.flops,
        "rows": rows,
        "reduced_vs_full": speedups,
    }


def format_report(report: dict[str, Any]) -> str:
    """The bench table as text."""
    lines = [
        f"{'engine':<28}{'prec':>5}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'fps':>8}{'GFLOP/s':>9}"
        f"{'RN50':>8}{'ratio':>7}"
    ]
    for row in report["rows"]:
        latency = row["latency_s"]
        lines.append(
            f"{row['engine']:<28}{row['precision']:>5}{latency['p50'] * 1e3:>9.1f}{latency['p90'] * 1e3:>9.1f}"
            f"{latency['p99'] * 1e3:>9.1f}{row['fps']:>8.2f}{row['gflops_per_s']:>9.1f}"
            f"{row['resnet50_gflops_per_s']:>8.1f}{row['ratio_to_resnet50']:>7.2f}"
        )
    for item in report["reduced_vs_full"]:
        lines.append(
            f"{item['backend']}: {item['reduced']} vs fp32 speed-up {item['speedup']:.2f}x, alpha diff "
            f"mean {item['alpha_abs_diff']['mean']:.2e} max {item['alpha_abs_diff']['max']:.2e}"
        )
    for video in report.get("video", []):
        lines.append(
            f"{video['engine']} {video['precision']} on {Path(video['clip']).name} ({video['frames']} frames, "
            f"{video['size'][0]}x{video['size'][1]} -> {video['work_size'][0]}x{video['work_size'][1]}): "
            f"end-to-end {video['end_to_end_fps']:.2f} fps vs model-only {video['model_fps']:.2f} fps, "
            f"ratio {video['ratio']:.2f}"
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
    axis.bar(x + 0.2, [r["resnet50_gflops_per_s"] for r in report["rows"]], 0.4, label="ResNet-50 (ceiling)")
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
