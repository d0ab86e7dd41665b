"""ResNet-50 as a ceiling, run on the same engine, device and precision as each bench row.

A model's FLOP rate means little alone; next to ResNet-50's rate on the very engine that ran the row
(ONNX Runtime on the CPU or a GPU provider, TorchScript on the CPU or CUDA, OpenVINO, AOTInductor,
TensorRT) it says how close to that engine's best the model runs. Each backend record in
:mod:`.registry` names its ceiling runner from here.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Runner = Callable[[], Any]


@dataclass(frozen=True)
class CeilingOptions:
    """How the row being compared ran: precision, CPU threads, GPU index, spinning."""

    precision: str
    threads: int = 0
    gpu: int = 0
    spinning: bool = True


class ResNet50:
    """torchvision's ResNet-50 (random weights) at one size and batch, its FLOPs, and its ONNX files on demand."""

    def __init__(self, height: int, width: int, batch: int) -> None:
        import torch
        import torchvision
        from torch.utils.flop_counter import FlopCounterMode

        self.model = torchvision.models.resnet50().eval()
        self.image = torch.rand(batch, 3, height, width)
        with torch.device("meta"), FlopCounterMode(display=False) as counter:
            torchvision.models.resnet50().eval()(torch.empty(batch, 3, height, width))
        self.flops = int(counter.get_total_flops())
        self._folder = tempfile.TemporaryDirectory(prefix="spgim-resnet50-")
        self.workdir = Path(self._folder.name)
        self._onnx: dict[str, Path] = {}

    def calibration_feeds(self, count: int = 8) -> list[dict[str, np.ndarray]]:
        """Random images of the input's shape: int8 ceilings calibrate on them (the ranges matter for accuracy,
        which a ceiling does not measure, not for speed)."""
        rng = np.random.default_rng(0)
        return [{"image": rng.random(tuple(self.image.shape), dtype=np.float32)} for _ in range(count)]

    def onnx(self, precision: str, quantized_as: str = "onnx") -> Path:
        """ResNet-50 as ONNX (opset 17, input ``image``, output ``logits``) in fp32 or fp16, or int8: QDQ-quantized
        as ``spgim export --precision int8`` quantizes SPG-IM's ONNX for the format ``quantized_as`` (``onnx`` for
        ONNX Runtime, ``onnx-trt`` for TensorRT; :mod:`spgim.int8_build`)."""
        key = f"{precision}-{quantized_as}" if precision == "int8" else precision
        if key in self._onnx:
            return self._onnx[key]
        if precision == "int8":
            from spgim.int8_build import QUANTIZERS

            quantized = self.workdir / f"resnet50.int8.{quantized_as}.onnx"
            QUANTIZERS[quantized_as](self.onnx("fp32"), quantized, self.calibration_feeds(), ())
            self._onnx[key] = quantized
            return quantized
        import onnx
        import torch

        path = self.workdir / "resnet50.onnx"
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

            half = self.workdir / "resnet50.fp16.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx.save(float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=False), str(half))
            path = half
        self._onnx[precision] = path
        return path

    def host_image(self, precision: str) -> np.ndarray:
        """The input as a numpy array in the dtype an fp32 or fp16 ONNX graph takes."""
        return np.asarray(self.image.numpy(), dtype=np.float16 if precision == "fp16" else np.float32)


def _onnxruntime_cpu(quantized_as: str) -> Callable[[ResNet50, CeilingOptions], Runner]:
    """ResNet-50 on ONNX Runtime's CPU provider, with the session options of :class:`.backends.OnnxRuntimeBackend`;
    its int8 graph quantized as the format ``quantized_as``'s int8 files are."""

    def runner(resnet: ResNet50, options: CeilingOptions) -> Runner:
        import onnxruntime as ort

        from .backends import session_options

        session = ort.InferenceSession(
            str(resnet.onnx(options.precision, quantized_as=quantized_as)),
            session_options(threads=options.threads, spinning=options.spinning),
            providers=["CPUExecutionProvider"],
        )
        feed = {"image": resnet.host_image(options.precision)}
        return lambda: session.run(None, feed)

    return runner


# ONNX Runtime's own ceiling, and the CPU twin's: in int8, ResNet-50 as TensorRT's QDQ graph.
onnxruntime_cpu = _onnxruntime_cpu("onnx")
onnxruntime_twin = _onnxruntime_cpu("onnx-trt")


def onnxruntime_gpu(provider: str) -> Callable[[ResNet50, CeilingOptions], Runner]:
    """ResNet-50 on ONNX Runtime's ``"cuda"`` or ``"tensorrt"`` provider, input and output bound on the GPU."""

    def runner(resnet: ResNet50, options: CeilingOptions) -> Runner:
        import onnxruntime as ort

        from .onnxruntime_gpu import provider_list

        providers = provider_list(
            provider, gpu=options.gpu, precision=options.precision, cache_dir=resnet.workdir / "ort-trt-cache"
        )
        session = ort.InferenceSession(str(resnet.onnx(options.precision)), providers=providers)
        image = ort.OrtValue.ortvalue_from_numpy(resnet.host_image(options.precision), "cuda", options.gpu)
        binding = session.io_binding()
        binding.bind_ortvalue_input("image", image)
        binding.bind_output("logits", "cuda", options.gpu)
        return lambda: session.run_with_iobinding(binding)

    return runner


def torchscript(device: str) -> Callable[[ResNet50, CeilingOptions], Runner]:
    """ResNet-50 traced and run like :class:`.backends.TorchScriptBackend`: cast, channels-last, on ``device``."""

    def runner(resnet: ResNet50, options: CeilingOptions) -> Runner:
        import torch

        target = "cpu" if device == "cpu" else f"cuda:{options.gpu}"
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[options.precision]
        image = resnet.image.to(target, dtype).contiguous(memory_format=torch.channels_last)
        # A copy: Module.to converts in place, and the next row needs the fp32 weights again.
        model = copy.deepcopy(resnet.model).to(target, dtype).to(memory_format=torch.channels_last)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks TorchScript deprecated
            traced = torch.jit.trace(model, image, check_trace=False)

        def run() -> Any:
            with torch.inference_mode():
                out = traced(image)
            if target != "cpu":
                torch.cuda.synchronize(target)
            return out

        return run

    return runner


def tensorrt(resnet: ResNet50, options: CeilingOptions) -> Runner:
    """ResNet-50 as a TensorRT engine built from its ONNX like ``spgim export`` builds SPG-IM's (strongly typed; int8
    from the symmetric QDQ graph)."""
    import torch

    from spgim.tensorrt_build import build_engine

    from .tensorrt_backend import EngineRunner

    source = resnet.onnx(options.precision, quantized_as="onnx-trt")
    engine_path = resnet.workdir / f"resnet50.{options.precision}.engine"
    shape = list(resnet.image.shape)
    build_engine(
        source,
        engine_path,
        profile={"image": [shape, shape, shape]},
        precision=options.precision,
        workspace_gb=4.0,
        plugin_library=None,
        timing_cache=resnet.workdir / "timing.cache",
    )
    import tensorrt as trt

    device = torch.device(f"cuda:{options.gpu}")
    engine_runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = EngineRunner(engine_path, engine_runtime, device)
    stream = torch.cuda.Stream(device)
    image = resnet.image.to(device)

    def run() -> Any:
        with torch.cuda.stream(stream):
            out = engine({"image": image}, stream)
        stream.synchronize()
        # The runtime must outlive its engine; holding it in the closure keeps it alive.
        return out, engine_runtime

    return run


def openvino(resnet: ResNet50, options: CeilingOptions) -> Runner:
    """ResNet-50's ONNX compiled by OpenVINO like :class:`.openvino_backend.OpenVINOBackend` compiles SPG-IM; for
    int8, NNCF-quantized to IR as ``spgim export --precision int8`` quantizes SPG-IM's (:mod:`spgim.int8_build`)."""
    from .openvino_backend import resnet50_openvino

    graph = resnet.onnx("fp32")
    if options.precision == "int8":
        from spgim.int8_build import QUANTIZERS

        graph = resnet.workdir / "resnet50.int8.xml"
        if not graph.is_file():
            QUANTIZERS["openvino"](resnet.onnx("fp32"), graph, resnet.calibration_feeds(), ())
    return resnet50_openvino(graph, resnet.host_image("fp32"), precision=options.precision, threads=options.threads)


def aotinductor(resnet: ResNet50, options: CeilingOptions) -> Runner:
    """ResNet-50 exported and AOTInductor-compiled like ``spgim export --formats pt2`` compiles SPG-IM."""
    from .aoti_backend import resnet50_aoti

    return resnet50_aoti(resnet.image, precision=options.precision, workdir=resnet.workdir)
