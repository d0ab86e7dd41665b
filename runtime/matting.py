"""``Matter``: an exported model folder behind one call, ``frames -> alpha``.

Pre- and post-processing live here once: uint8 RGB frames are resized to the working size (the
longer side at most ``work_size``, both sides multiples of 32, aspect kept), scaled to [0, 1],
run through SPD -> SPGM, and the alpha is resized back to each frame's size.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from spgim.errors import SpgimError

from .artifacts import check_size, load_artifacts, select_pair
from .backends import OnnxRuntimeBackend, TorchScriptBackend

# backend name -> (artifact format, precisions it runs)
BACKENDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnxruntime": ("onnx", ("fp32", "fp16")),
    "onnxruntime-twin": ("onnx-trt", ("fp32", "fp16")),
    "torchscript": ("torchscript", ("fp32", "bf16", "fp16")),
}
# Tried in this order by backend="auto" (ONNX Runtime's fused CPU kernels first).
AUTO_ORDER = ("onnxruntime", "torchscript", "onnxruntime-twin")


def working_size(height: int, width: int, work_size: int) -> tuple[int, int]:
    """(height, width) with the longer side at most ``work_size``, both rounded to multiples of 32."""
    scale = min(1.0, work_size / max(height, width))
    return max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32)


class Matter:
    """Alpha mattes of RGB frames from an ``spgim export`` folder.

    Args:
        model_dir: the export folder (``spgim-export.json`` and sidecars).
        backend: ``"auto"``, ``"onnxruntime"``, ``"onnxruntime-twin"`` (TensorRT-flavour graph on the CPU)
            or ``"torchscript"``.
        precision: ``"fp32"``, ``"fp16"`` or (TorchScript) ``"bf16"``.
        work_size: the longer side of the working resolution.
        threads: CPU threads for ONNX Runtime (0: its default).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        backend: str = "auto",
        precision: str = "fp32",
        work_size: int = 512,
        threads: int = 0,
    ) -> None:
        self.artifacts = load_artifacts(model_dir)
        self.work_size = work_size
        names = AUTO_ORDER if backend == "auto" else (backend,)
        errors = []
        self.backend: OnnxRuntimeBackend | TorchScriptBackend
        for name in names:
            if name not in BACKENDS:
                raise SpgimError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
            fmt, precisions = BACKENDS[name]
            if precision not in precisions:
                errors.append(f"{name} has no {precision}")
                continue
            try:
                exported = "fp32" if name == "torchscript" else precision
                self.spd_artifact, self.spgm_artifact = select_pair(self.artifacts, fmt, exported)
                if name == "torchscript":
                    self.backend = TorchScriptBackend(self.spd_artifact, self.spgm_artifact, dtype=precision)
                else:
                    self.backend = OnnxRuntimeBackend(self.spd_artifact, self.spgm_artifact, threads=threads)
                break
            except SpgimError as error:
                if backend != "auto":
                    raise
                errors.append(str(error))
        else:
            raise SpgimError(f"no backend can run {model_dir} in {precision}: {'; '.join(errors)}")
        self.backend_name = self.backend.name

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Alpha in [0, 1], float32, ``(N, H, W)`` for uint8 frames ``(N, H, W, 3)`` (or one ``(H, W, 3)``)."""
        batch = frames[None] if frames.ndim == 3 else frames
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise SpgimError(f"frames must be uint8 (N, H, W, 3) RGB, got {batch.dtype} {batch.shape}")
        height, width = batch.shape[1:3]
        work_h, work_w = working_size(height, width, self.work_size)
        check_size(self.spgm_artifact, work_h, work_w)
        resized = np.stack([cv2.resize(f, (work_w, work_h), interpolation=cv2.INTER_AREA) for f in batch])
        image = np.ascontiguousarray(resized.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        alpha = self.backend.infer(image)[:, 0]
        if (work_h, work_w) != (height, width):
            alpha = np.stack([cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR) for a in alpha])
        alpha = np.clip(alpha, 0.0, 1.0)
        return alpha if frames.ndim == 4 else alpha[0]
