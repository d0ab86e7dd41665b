"""``Matter``: an exported model folder behind one call, ``frames -> alpha``.

Pre- and post-processing live here once: uint8 RGB frames are resized to the working size (the
longer side at most ``work_size``, both sides multiples of 32, aspect kept), scaled to [0, 1],
run through SPD -> SPGM, and the alpha is resized back to each frame's size: with numpy and cv2 on
the host for CPU backends, with torch on the device for GPU backends (only the final alpha comes back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from spgim.errors import SpgimError

from .artifacts import Artifact, check_size, load_artifacts, select_pair
from .backends import OnnxRuntimeBackend, TorchScriptBackend
from .device_frames import matte_on_device
from .devices import unavailable_reason
from .onnxruntime_gpu import OnnxRuntimeGpuBackend
from .protocol import Backend, DeviceBackend
from .tensorrt_backend import TensorRTBackend

# backend name -> (artifact format, precisions it runs)
BACKENDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnxruntime": ("onnx", ("fp32", "fp16")),
    "onnxruntime-twin": ("onnx-trt", ("fp32", "fp16")),
    "torchscript": ("torchscript", ("fp32", "bf16", "fp16")),
    "tensorrt": ("engine", ("fp32", "fp16")),
    "onnxruntime-trt": ("onnx", ("fp32", "fp16")),
    "onnxruntime-cuda": ("onnx", ("fp32", "fp16")),
    "torchscript-cuda": ("torchscript", ("fp32", "bf16", "fp16")),
}
# Tried in this order by backend="auto": GPU backends where this machine has them (TensorRT engines
# first), then ONNX Runtime's fused CPU kernels.
AUTO_ORDER = (
    "tensorrt",
    "onnxruntime-trt",
    "onnxruntime-cuda",
    "torchscript-cuda",
    "onnxruntime",
    "torchscript",
    "onnxruntime-twin",
)


def open_backend(
    name: str,
    spd: Artifact,
    spgm: Artifact,
    *,
    precision: str,
    threads: int,
    gpu: int,
    plugin: str | Path | None,
    spinning: bool = True,
) -> Backend:
    """Backend ``name`` (a key of :data:`BACKENDS`) on an SPD/SPGM artifact pair."""
    if name == "tensorrt":
        return TensorRTBackend(spd, spgm, gpu=gpu, plugin=plugin)
    if name in ("onnxruntime-cuda", "onnxruntime-trt"):
        provider = "cuda" if name == "onnxruntime-cuda" else "tensorrt"
        return OnnxRuntimeGpuBackend(spd, spgm, provider=provider, gpu=gpu)
    if name in ("torchscript", "torchscript-cuda"):
        device = "cpu" if name == "torchscript" else f"cuda:{gpu}"
        return TorchScriptBackend(spd, spgm, dtype=precision, device=device)
    return OnnxRuntimeBackend(spd, spgm, threads=threads, spinning=spinning)


def usable_backends(model_dir: str | Path) -> list[str]:
    """The backends of :data:`BACKENDS` that this machine can run on ``model_dir``'s artifact formats."""
    formats = {artifact.format for artifact in load_artifacts(model_dir)}
    return [name for name, (fmt, _) in BACKENDS.items() if fmt in formats and unavailable_reason(name) is None]


def working_size(height: int, width: int, work_size: int) -> tuple[int, int]:
    """(height, width) with the longer side at most ``work_size``, both rounded to multiples of 32."""
    scale = min(1.0, work_size / max(height, width))
    return max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32)


class Matter:
    """Alpha mattes of RGB frames from an ``spgim export`` folder.

    Args:
        model_dir: the export folder (``spgim-export.json`` and sidecars).
        backend: ``"auto"`` (the first of :data:`AUTO_ORDER` this machine and folder can run; see
            ``backend_name``) or a key of :data:`BACKENDS`: ``"onnxruntime"``, ``"onnxruntime-twin"``
            (TensorRT-flavour graph on the CPU), ``"torchscript"``, and on a GPU ``"tensorrt"`` (engines),
            ``"onnxruntime-trt"``, ``"onnxruntime-cuda"``, ``"torchscript-cuda"``.
        precision: ``"fp32"``, ``"fp16"`` or (TorchScript) ``"bf16"``.
        work_size: the longer side of the working resolution.
        threads: CPU threads for ONNX Runtime (0: its default).
        gpu: CUDA device index for the GPU backends.
        plugin: the TST attention plugin library for engines (default: looked up, see
            :func:`spgim.tst_plugin.find_plugin_library`).

    Attributes:
        backend_name: which engine and precision runs.
        device: ``"cpu"`` or ``"cuda:N"``, where the backend runs and :meth:`alpha_on_device` returns the alpha.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        backend: str = "auto",
        precision: str = "fp32",
        work_size: int = 512,
        threads: int = 0,
        gpu: int = 0,
        plugin: str | Path | None = None,
        spinning: bool = True,
    ) -> None:
        self.artifacts = load_artifacts(model_dir)
        self.work_size = work_size
        names = AUTO_ORDER if backend == "auto" else (backend,)
        errors = []
        self.backend: Backend
        for name in names:
            if name not in BACKENDS:
                raise SpgimError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
            fmt, precisions = BACKENDS[name]
            if precision not in precisions:
                errors.append(f"{name} has no {precision}")
                continue
            missing = unavailable_reason(name) if backend == "auto" else None
            if missing:
                errors.append(missing)
                continue
            try:
                exported = "fp32" if fmt == "torchscript" else precision
                self.spd_artifact, self.spgm_artifact = select_pair(self.artifacts, fmt, exported)
                self.backend = open_backend(
                    name,
                    self.spd_artifact,
                    self.spgm_artifact,
                    precision=precision,
                    threads=threads,
                    gpu=gpu,
                    plugin=plugin,
                    spinning=spinning,
                )
                break
            except SpgimError as error:
                if backend != "auto":
                    raise
                errors.append(str(error))
        else:
            raise SpgimError(f"no backend can run {model_dir} in {precision}: {'; '.join(errors)}")
        self.backend_name = self.backend.name
        self.device = self.backend.device

    def _batch(self, frames: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Frames as ``(N, H, W, 3)`` and the working size, checked against the artifact's profile."""
        batch = frames[None] if frames.ndim == 3 else frames
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise SpgimError(f"frames must be uint8 (N, H, W, 3) RGB, got {batch.dtype} {batch.shape}")
        work_h, work_w = working_size(batch.shape[1], batch.shape[2], self.work_size)
        check_size(self.spgm_artifact, work_h, work_w)
        return batch, work_h, work_w

    def alpha_on_device(self, frames: np.ndarray) -> Any:
        """As :meth:`__call__`, but the alpha is a float32 torch tensor on :attr:`device` (no download)."""
        import torch

        if self.device == "cpu":
            return torch.from_numpy(self(frames))
        batch, work_h, work_w = self._batch(frames)
        alpha = matte_on_device(cast(DeviceBackend, self.backend), batch, work_h, work_w)
        return alpha if frames.ndim == 4 else alpha[0]

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Alpha in [0, 1], float32, ``(N, H, W)`` for uint8 frames ``(N, H, W, 3)`` (or one ``(H, W, 3)``)."""
        if self.device != "cpu":
            return np.asarray(self.alpha_on_device(frames).cpu().numpy(), dtype=np.float32)
        batch, work_h, work_w = self._batch(frames)
        height, width = batch.shape[1:3]
        resized = np.stack([cv2.resize(f, (work_w, work_h), interpolation=cv2.INTER_AREA) for f in batch])
        image = np.ascontiguousarray(resized.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        alpha = self.backend.infer(image)[:, 0]
        if (work_h, work_w) != (height, width):
            alpha = np.stack([cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR) for a in alpha])
        alpha = np.clip(alpha, 0.0, 1.0)
        return alpha if frames.ndim == 4 else alpha[0]
