"""On a GPU machine: run the fp32 and fp16 engines, compare them with ONNX Runtime, time them.

    bash scripts/gpu_check.sh SPD.pt SPGM.pt [SIZE]     # builds the plugin and engines, then runs this

Engines are driven the TensorRT 10/11 way: torch CUDA tensors as I/O buffers, ``set_input_shape``,
``set_tensor_address`` by name, ``execute_async_v3`` on a CUDA stream; SPD's outputs stay on the
device and are bound straight to SPGM's inputs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from spgim.export.engine import load_plugin_library

TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16}


class EngineRunner:
    """One deserialised engine and its execution context."""

    def __init__(self, path: Path, plugin: Path | None) -> None:
        import tensorrt as trt

        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        if plugin is not None:
            load_plugin_library(plugin)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise SystemExit(f"could not deserialise {path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def __call__(self, inputs: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> dict[str, torch.Tensor]:
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        for name in self.outputs:
            dtype = TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise SystemExit("execute_async_v3 failed")
        return results


def run_pair(spd: EngineRunner, spgm: EngineRunner, image: torch.Tensor, stream: torch.cuda.Stream) -> torch.Tensor:
    features = spd({"image": image}, stream)
    return spgm({"image": image, **features}, stream)["alpha"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="spgim export output with fp32 and fp16 engines and ONNX graphs")
    parser.add_argument("--plugin", type=Path, default=Path("build/native/libspgim_tst_plugin.so"))
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sidecar = json.loads((args.folder / "spd.fp32.engine.json").read_text())
    width, height = sidecar["export_size"]
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    spd_onnx = ort.InferenceSession(str(args.folder / "spd.onnx"), providers=["CPUExecutionProvider"])
    spgm_onnx = ort.InferenceSession(str(args.folder / "spgm.onnx"), providers=["CPUExecutionProvider"])
    features = spd_onnx.run(None, {"image": image.numpy()})
    reference = spgm_onnx.run(
        None, dict(zip(["image", "mask", "r2", "r3", "r4"], [image.numpy(), *features], strict=True))
    )[0]
    stream = torch.cuda.Stream()
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "size": [width, height]}
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        spd = EngineRunner(args.folder / f"spd.{precision}.engine", None)
        spgm = EngineRunner(args.folder / f"spgm.{precision}.engine", args.plugin)
        device_image = image.to("cuda", dtype)
        with torch.cuda.stream(stream):
            alpha = run_pair(spd, spgm, device_image, stream)
            stream.synchronize()
            error = np.abs(alpha.float().cpu().numpy() - reference)
            times = []
            for _ in range(args.iters):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(stream)
                run_pair(spd, spgm, device_image, stream)
                end.record(stream)
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000)
        median = statistics.median(times)
        report[precision] = {
            "max_abs_vs_onnxruntime": float(error.max()),
            "mean_abs_vs_onnxruntime": float(error.mean()),
            "median_s": median,
            "fps": 1 / median,
            "finite": bool(torch.isfinite(alpha).all()),
        }
        print(f"{precision}: vs ONNX Runtime max {error.max():.2e} mean {error.mean():.2e}; {1 / median:.1f} frames/s")
    report["fp16_speedup"] = report["fp32"]["median_s"] / report["fp16"]["median_s"]
    print(f"fp16 speed-up over fp32: {report['fp16_speedup']:.2f}x")
    ok = report["fp32"]["max_abs_vs_onnxruntime"] < 1e-3 and report["fp16"]["mean_abs_vs_onnxruntime"] < 1e-2
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    raise SystemExit(0 if ok and report["fp16"]["finite"] else 1)


if __name__ == "__main__":
    main()
