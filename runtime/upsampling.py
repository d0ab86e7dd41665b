"""The exported ``upsample`` graph (guided upsampling of the working alpha to the frame's size) on each engine.

``open_upsampler`` opens the export's upsample artifact in the format the backend reads (ONNX through ONNX
Runtime, OpenVINO IR or ONNX through OpenVINO, TorchScript, an AOTInductor package, a TensorRT engine) and
returns one call ``(alpha, image, frames) -> alpha_full``: the working alpha ``(N, 1, h, w)`` float32, the
working image ``(N, 3, h, w)`` that produced it, and the frames ``(N, H, W, 3)`` uint8 as decoded; numpy on
the CPU, torch tensors on the backend's GPU (so a GPU never downloads a low-resolution alpha).

Which upsampling runs (``Matter(upsampling=...)``): ``guided`` (this graph), ``bilinear`` (cv2 or torch), or
``auto``: guided on a GPU, bilinear on the CPU, where the graph costs ~27 ms per 720p frame on one core
against 0.3 ms for cv2's bilinear resize (``scripts/pipeline_profile.py``): more than the whole budget of
a live frame. Asked for on the CPU, it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from spgim.errors import SpgimError

from .artifacts import Artifact, select_upsampler

UPSAMPLING = ("auto", "guided", "bilinear")
Upsampler = Callable[[Any, Any, Any], Any]


def choose_upsampling(asked: str, device: str, artifact: Artifact | None) -> str:
    """``"guided"`` or ``"bilinear"`` for what was asked, where the backend runs, and what the folder holds."""
    if asked not in UPSAMPLING:
        raise SpgimError(f"unknown upsampling {asked!r}; choose {', '.join(UPSAMPLING)}")
    if asked == "bilinear":
        return "bilinear"
    if artifact is None:
        if asked == "guided":
            raise SpgimError(
                "this export folder has no upsample graph in the backend's format (exported before guided "
                "upsampling existed?): export it again, or use --upsample bilinear"
            )
        return "bilinear"
    if asked == "auto" and device == "cpu":
        return "bilinear"
    return "guided"


def upsampler_artifact(artifacts: list[Artifact], spgm: Artifact) -> Artifact | None:
    """The upsample graph matching the format of the SPGM artifact a backend reads."""
    return select_upsampler(artifacts, spgm.format)


def open_upsampler(artifact: Artifact, *, device: str, threads: int = 0) -> Upsampler:
    """The upsample graph of ``artifact`` on ``device`` (``"cpu"`` or ``"cuda:N"``) as one call."""
    fmt = artifact.format
    if fmt == "torchscript":
        return _torchscript(artifact, device)
    if device != "cpu" and fmt == "engine":
        return _engine(artifact, device)
    if device != "cpu":
        raise SpgimError(f"guided upsampling on {device} runs the TorchScript or engine graph, not {fmt}")
    if fmt == "onnx":
        return _onnxruntime(artifact, threads)
    if fmt == "openvino":
        return _openvino(artifact, threads)
    if fmt == "pt2":
        return _aotinductor(artifact)
    raise SpgimError(f"no runner for the {fmt} upsample graph")


def _feed(alpha: Any, image: Any, frames: Any) -> dict[str, np.ndarray]:
    return {
        "alpha": np.ascontiguousarray(alpha, dtype=np.float32),
        "image": np.ascontiguousarray(image, dtype=np.float32),
        "frame": np.ascontiguousarray(frames, dtype=np.uint8),
    }


def _onnxruntime(artifact: Artifact, threads: int) -> Upsampler:
    import onnxruntime as ort

    from .backends import session_options

    try:
        session = ort.InferenceSession(
            str(artifact.path), session_options(threads=threads, spinning=False), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # ONNX Runtime raises its own types for corrupt graphs
        raise SpgimError(f"ONNX Runtime cannot load {artifact.path.name}: {str(error)[:200]}") from None

    def run(alpha: Any, image: Any, frames: Any) -> Any:
        return session.run(None, _feed(alpha, image, frames))[0]

    return run


def _openvino(artifact: Artifact, threads: int) -> Upsampler:
    from .openvino_backend import _compile, shared_core

    compiled = _compile(shared_core(), artifact.path, precision="fp32", threads=threads)
    request = compiled.create_infer_request()

    def run(alpha: Any, image: Any, frames: Any) -> Any:
        return np.array(request.infer(_feed(alpha, image, frames))[0], dtype=np.float32)

    return run


def _torch_inputs(alpha: Any, image: Any, frames: Any, device: str) -> tuple[Any, Any, Any]:
    import torch

    def tensor(x: Any, dtype: Any) -> Any:
        x = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        return x.to(device, dtype).contiguous()

    return tensor(alpha, torch.float32), tensor(image, torch.float32), tensor(frames, torch.uint8)


def _torchscript(artifact: Artifact, device: str) -> Upsampler:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks TorchScript deprecated on every load
            module = torch.jit.load(str(artifact.path), map_location=device).eval()
    except RuntimeError as error:
        raise SpgimError(f"cannot load TorchScript {artifact.path.name}: {str(error)[:160]}") from None

    def run(alpha: Any, image: Any, frames: Any) -> Any:
        with torch.no_grad():
            out = module(*_torch_inputs(alpha, image, frames, device))
        return out.numpy() if device == "cpu" else out

    return run


def _aotinductor(artifact: Artifact) -> Upsampler:
    import torch

    from .aoti_backend import load_package

    package = load_package(artifact.path)

    def run(alpha: Any, image: Any, frames: Any) -> Any:
        with torch.inference_mode():
            out = package(*_torch_inputs(alpha, image, frames, "cpu"))
        if isinstance(out, list | tuple):
            (out,) = out
        return out.contiguous().numpy()

    return run


def _engine(artifact: Artifact, device: str) -> Upsampler:
    import torch

    from .devices import import_tensorrt
    from .tensorrt_backend import EngineRunner

    trt = import_tensorrt()
    if trt is None:
        raise SpgimError(f"{artifact.path.name} is a TensorRT engine but TensorRT is not installed here")
    target = torch.device(device)
    logger = trt.Logger(trt.Logger.WARNING)
    with torch.cuda.device(target):
        runtime = trt.Runtime(logger)
        runner = EngineRunner(artifact.path, runtime, target)
        stream = torch.cuda.Stream(target)

    def run(alpha: Any, image: Any, frames: Any) -> Any:
        inputs = dict(zip(("alpha", "image", "frame"), _torch_inputs(alpha, image, frames, device), strict=True))
        with torch.cuda.device(target):
            caller = torch.cuda.current_stream(target)
            stream.wait_stream(caller)
            with torch.cuda.stream(stream):
                out = runner(inputs, stream)[runner.outputs[0]]
            caller.wait_stream(stream)
            out.record_stream(caller)
        _ = (runtime, logger)  # the engine lives only as long as its runtime
        return out

    return run
