"""On a GPU machine: every GPU backend of spgim.runtime against ONNX Runtime on the CPU, and their speed.

    TensorRT_ROOT=/opt/TensorRT bash scripts/gpu_check.sh SPD.pt SPGM.pt [SIZE]   # builds, exports, runs this
    python scripts/gpu_check.py EXPORT_DIR [--plugin PATH] [--iters 50] [--json report.json]

For tensorrt (the engines, through spgim.runtime.tensorrt_backend), onnxruntime-trt, onnxruntime-cuda
and torchscript-cuda, in each precision they run: the model-only alpha against ONNX Runtime CPU fp32
on the same image (max and mean abs), the end-to-end alpha through ``Matter`` (pre/post on the
device) against ``Matter`` on the CPU, and the model-only median latency on the device. Backends this
machine cannot run are listed with the reason. Exit code 0 when every backend that ran agrees and
the fp32, fp16 and int8 engines ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spgim.errors import SpgimError
from spgim.runtime.artifacts import load_artifacts
from spgim.runtime.matting import Matter
from spgim.runtime.protocol import DeviceBackend
from spgim.runtime.registry import BACKENDS
from spgim.runtime.timing import time_calls

# Every GPU backend x precision of the registry: a new GPU backend is checked without touching this script.
CANDIDATES = [
    (name, precision) for name, record in BACKENDS.items() if record.device == "cuda" for precision in record.precisions
]


def tolerance(backend: str, precision: str) -> tuple[str, float]:
    """Which error statistic must stay below what: fp32 by its max, reduced precisions by their mean (int8: twice
    its export gate's 1e-2, as the CPU tests allow away from the gate's own scenes)."""
    if precision == "fp32":
        # TensorRT fp32 engines clear TF32; ONNX Runtime's CUDA provider and cuDNN under torch use it by default.
        return "max", 1e-3 if backend == "tensorrt" else 5e-3
    return "mean", {"bf16": 5e-2, "int8": 2e-2}.get(precision, 1e-2)


def time_on_device(backend: DeviceBackend, image: torch.Tensor, iters: int) -> list[float]:
    """Seconds per model-only call, the device synchronised around each."""

    def call() -> None:
        torch.cuda.synchronize()  # an idle device: nothing of the previous call is timed
        backend.infer_tensor(image)
        torch.cuda.synchronize()

    return time_calls(call, 3, iters)


def check(folder: Path, plugin: Path | None, iters: int) -> dict[str, Any]:
    """Run every candidate this machine can; returns the report."""
    spgm = next(a for a in load_artifacts(folder) if a.branch == "spgm")
    width, height = spgm.sidecar["export_size"]
    work_size = max(height, width)
    cpu = Matter(folder, backend="onnxruntime", precision="fp32", work_size=work_size)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    reference = cpu.backend.infer(image.numpy())
    # Frames of twice the export size: they shrink exactly to it, which every export's profile accepts.
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 2 * height, 2 * width, 3), dtype=np.uint8)
    end_to_end_reference = cpu(frames)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "size": [width, height], "rows": [], "skipped": []}
    for backend, precision in CANDIDATES:
        try:
            matter = Matter(folder, backend=backend, precision=precision, work_size=work_size, plugin=plugin)
        except SpgimError as refused:
            report["skipped"].append({"backend": backend, "precision": precision, "reason": str(refused)})
            print(f"{backend:<17}{precision:<6}skipped: {refused}")
            continue
        device_backend = matter.backend
        assert isinstance(device_backend, DeviceBackend)
        device_image = image.to(matter.device)
        alpha = device_backend.infer_tensor(device_image).cpu().numpy()
        error = np.abs(alpha - reference)
        end_to_end = np.abs(matter(frames) - end_to_end_reference)
        samples = time_on_device(device_backend, device_image, iters)
        statistic, bound = tolerance(backend, precision)
        measured = float(error.max() if statistic == "max" else error.mean())
        row = {
            "backend": backend,
            "precision": precision,
            "engine": matter.backend_name,
            "max_abs_vs_onnxruntime_cpu": float(error.max()),
            "mean_abs_vs_onnxruntime_cpu": float(error.mean()),
            "end_to_end_mean_abs_vs_cpu": float(end_to_end.mean()),
            "finite": bool(np.isfinite(alpha).all()),
            "median_s": statistics.median(samples),
            "fps": 1 / statistics.median(samples),
            "ok": bool(np.isfinite(alpha).all()) and measured < bound and float(end_to_end.mean()) < bound,
        }
        report["rows"].append(row)
        print(
            f"{backend:<17}{precision:<6}max {row['max_abs_vs_onnxruntime_cpu']:.2e} mean "
            f"{row['mean_abs_vs_onnxruntime_cpu']:.2e} end-to-end {row['end_to_end_mean_abs_vs_cpu']:.2e}  "
            f"{row['median_s'] * 1e3:8.2f} ms {row['fps']:8.1f} fps  {'ok' if row['ok'] else 'FAIL'}"
        )
    report["speedups"] = {}
    for backend in dict.fromkeys(b for b, _ in CANDIDATES):
        rows = {r["precision"]: r for r in report["rows"] if r["backend"] == backend}
        for reduced in ("fp16", "bf16", "int8"):
            if "fp32" in rows and reduced in rows:
                speedup = rows["fp32"]["median_s"] / rows[reduced]["median_s"]
                report["speedups"][f"{backend} {reduced}/fp32"] = speedup
                print(f"{backend} {reduced} speed-up over fp32: {speedup:.2f}x")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="spgim export output with engines, ONNX graphs and TorchScript")
    parser.add_argument("--plugin", type=Path, help="libspgim_tst_plugin.so (default: looked up as the runtime does)")
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU is visible: run this on the GPU machine")
    report = check(args.folder, args.plugin, args.iters)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    engines_ran = {r["precision"] for r in report["rows"] if r["backend"] == "tensorrt"} == {"fp32", "fp16", "int8"}
    ok = engines_ran and all(row["ok"] for row in report["rows"])
    print("all GPU backends agree with ONNX Runtime on the CPU" if ok else "gpu_check FAILED (see above)")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
