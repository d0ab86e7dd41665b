"""Guided upsampling of the working alpha to the frame's size: the exported ``upsample`` graph on each engine,
or the same filter computed with OpenCV on the CPU.

``open_upsampler`` opens the export's upsample artifact in the format the backend reads (ONNX through ONNX
Runtime, OpenVINO IR or ONNX through OpenVINO, TorchScript, an AOTInductor package, a TensorRT engine) and
returns one call ``(alpha, image, frames) -> alpha_full``: the working alpha ``(N, 1, h, w)`` float32, the
working image ``(N, 3, h, w)`` that produced it, and the frames ``(N, H, W, 3)`` uint8 as decoded; numpy on
the CPU, torch tensors on the backend's GPU (so a GPU never downloads a low-resolution alpha).
``cv2_guided_upsampler`` is that call for the CPU: the graph's filter with the radius and eps its sidecar
records, in OpenCV, equal to the graph within float32 rounding.

Which upsampling runs (``Matter(upsampling=...)``): ``guided`` (the graph on the backend's engine),
``guided-cv2`` (the filter in OpenCV, CPU only), ``bilinear`` (cv2 or torch), or ``auto``: the graph on a
GPU, ``guided-cv2`` on the CPU. On the CPU the graph costs ~27 ms per 720p frame on one core, more than a
live frame's whole budget; OpenCV computes the same alpha in ~3 ms, bilinear in 0.3
(``scripts/pipeline_profile.py``). On the three reference clips, the guided alpha has a lower dtSSD and MAE
than the bilinear one (README, "Upsampling").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from spgim.errors import SpgimError

from .artifacts import Artifact, select_upsampler, verify_files

UPSAMPLING = ("auto", "guided", "guided-cv2", "bilinear")
# GuidedUpsampler's GREY_WEIGHTS (ITU-R BT.601 luma; a test keeps the two equal): the runtime does not import
# the training package.
GREY_WEIGHTS = (0.299, 0.587, 0.114)
Upsampler = Callable[[Any, Any, Any], Any]


def check_upsampling(asked: str) -> None:
    """Refuse an upsampling that is not one of :data:`UPSAMPLING` (``Matter`` asks before it opens anything)."""
    if asked not in UPSAMPLING:
        raise SpgimError(f"unknown upsampling {asked!r}; choose {', '.join(UPSAMPLING)}")


def choose_upsampling(asked: str, device: str, artifact: Artifact | None) -> str:
    """``"guided"``, ``"guided-cv2"`` or ``"bilinear"`` for what was asked, where the backend runs, and what the
    folder holds (the graph, or for ``guided-cv2`` its sidecar's radius and eps)."""
    check_upsampling(asked)
    if asked == "bilinear":
        return "bilinear"
    if artifact is None:
        if asked != "auto":
            raise SpgimError(
                "this export folder has no upsample graph in the backend's format (exported before guided "
                "upsampling existed?): export it again, or use --upsample bilinear"
            )
        return "bilinear"
    if asked == "guided-cv2" and device != "cpu":
        raise SpgimError(f"guided-cv2 upsampling runs on the CPU; on {device} use guided (the graph on the engine)")
    if asked == "auto":
        return "guided-cv2" if device == "cpu" else "guided"
    return asked


def upsampler_artifact(artifacts: list[Artifact], spgm: Artifact) -> Artifact | None:
    """The upsample graph matching the format of the SPGM artifact a backend reads."""
    return select_upsampler(artifacts, spgm.format)


def open_upsampler(artifact: Artifact, *, device: str, threads: int = 0) -> Upsampler:
    """The upsample graph of ``artifact`` on ``device`` (``"cpu"`` or ``"cuda:N"``) as one call.

    Its files are checked against the sidecar's sha256 first: opening TorchScript, a package or an engine runs code.
    """
    verify_files(artifact)
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


def cv2_guided_upsampler(artifact: Artifact) -> Upsampler:
    """The filter of ``artifact``'s upsample graph (radius and eps from its sidecar), computed with OpenCV.

    Numpy in and out, as the graph's CPU runners. Per frame: box filters at the working size (normalised by
    the count of pixels inside the image, as the graph's pooling), then at the frame's size one bilinear
    resize of each coefficient, the grey frame, and one multiply-add.
    """
    recorded = artifact.sidecar.get("source", {}).get("upsampler", {})
    try:
        radius, eps = int(recorded["radius"]), float(recorded["eps"])
    except (KeyError, TypeError, ValueError):
        raise SpgimError(f"{artifact.path.name}: its sidecar records no guided filter radius and eps") from None
    if radius < 1 or not eps > 0:
        raise SpgimError(f"{artifact.path.name}: guided filter radius {radius} or eps {eps} out of range")
    return _Cv2Guided(radius, eps)


class _Cv2Guided:
    def __init__(self, radius: int, eps: float) -> None:
        self.window = (2 * radius + 1, 2 * radius + 1)
        self.eps = np.float32(eps)
        self.grey_lo = np.array(GREY_WEIGHTS, dtype=np.float32)
        # uint8 -> [0, 1] folded into the frame's grey weights.
        self.grey_hi = (self.grey_lo / np.float32(255.0))[None]
        self.inverse_counts: dict[tuple[int, int, int], np.ndarray] = {}
        self.scratch: tuple[np.ndarray, ...] | None = None

    def _box(self, planes: np.ndarray) -> np.ndarray:
        """Mean over the window of ``(h, w, C)``, counting only pixels inside the image."""
        h, w, c = planes.shape
        inverse = self.inverse_counts.get((h, w, c))
        if inverse is None:
            ones = np.ones((h, w), np.float32)
            counts = cv2.boxFilter(ones, -1, self.window, normalize=False, borderType=cv2.BORDER_CONSTANT)
            # One count per channel: cv2.multiply on equal shapes, where numpy's broadcast was 6x slower.
            inverse = self.inverse_counts[(h, w, c)] = np.repeat((1.0 / counts)[..., None], c, axis=2)
        total = cv2.boxFilter(planes, -1, self.window, normalize=False, borderType=cv2.BORDER_CONSTANT)
        return cv2.multiply(total, inverse)

    def __call__(self, alpha: Any, image: Any, frames: Any) -> Any:
        n, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
        out = np.empty((n, 1, height, width), dtype=np.float32)
        # Frame-sized scratch kept between calls: fresh 720p buffers every frame cost more in page faults
        # than the arithmetic (11 ms against 2 per frame).
        if self.scratch is None or self.scratch[0].shape[:2] != (height, width):
            self.scratch = (
                np.empty((height, width, 3), np.float32),
                np.empty((height, width), np.float32),
                np.empty((height, width), np.float32),
                np.empty((height, width), np.float32),
            )
        colour, grey, a_high, b_high = self.scratch
        for i in range(n):
            h, w = image.shape[2:]
            # Centred on 0.5, as the graph: the variance is a difference of smaller numbers.
            guide = (self.grey_lo @ image[i].reshape(3, -1)).reshape(h, w) - np.float32(0.5)
            p = alpha[i, 0].astype(np.float32, copy=False)
            mean_i, mean_p, mean_ip, mean_ii = cv2.split(self._box(cv2.merge((guide, p, guide * p, guide * guide))))
            a = (mean_ip - mean_i * mean_p) / (mean_ii - mean_i * mean_i + self.eps)
            b = mean_p - a * (mean_i + np.float32(0.5))
            a_low, b_low = cv2.split(self._box(cv2.merge((a, b))))
            cv2.resize(a_low, (width, height), dst=a_high, interpolation=cv2.INTER_LINEAR)
            cv2.resize(b_low, (width, height), dst=b_high, interpolation=cv2.INTER_LINEAR)
            np.copyto(colour, frames[i], casting="unsafe")
            cv2.transform(colour, self.grey_hi, dst=grey[..., None])
            cv2.multiply(a_high, grey, dst=a_high)
            cv2.add(a_high, b_high, dst=out[i, 0])
        return np.clip(out, 0.0, 1.0, out=out)


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
