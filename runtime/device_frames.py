"""Pre- and post-processing on the backend's device, for backends that run on a GPU.

The uint8 frames are uploaded once, resized and normalised there; the alpha is resized back to the
frames' size there, and only the final alpha is downloaded. The image is area-averaged when both
sides shrink (torch's adaptive pooling: cv2 ``INTER_AREA``'s result for integer ratios, whole-pixel
windows otherwise), else bilinear with antialiasing; the alpha is bilinear, as cv2 ``INTER_LINEAR``
on the CPU path. So the GPU path's alpha differs slightly from the CPU path's (tested on torch's CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .protocol import DeviceBackend


def frames_to_image(frames: Any, height: int, width: int, device: str) -> Any:
    """uint8 RGB frames ``(N, H, W, 3)`` (array or tensor) -> float32 ``(N, 3, height, width)`` in [0, 1] there."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    x = x.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    if tuple(x.shape[2:]) != (height, width):
        if height <= x.shape[2] and width <= x.shape[3]:
            x = F.interpolate(x, size=(height, width), mode="area")
        else:
            x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.contiguous()


def alpha_to_frames(alpha: Any, height: int, width: int) -> Any:
    """Alpha ``(N, 1, h, w)`` -> ``(N, height, width)`` float32 in [0, 1], on the same device."""
    import torch.nn.functional as F

    if tuple(alpha.shape[2:]) != (height, width):
        alpha = F.interpolate(alpha.float(), size=(height, width), mode="bilinear", align_corners=False)
    return alpha[:, 0].float().clamp(0.0, 1.0)


def matte_on_device(
    backend: DeviceBackend,
    frames: np.ndarray,
    height: int,
    width: int,
    *,
    run: Callable[[Any], Any] | None = None,
    upsample: Callable[[Any, Any, Any], Any] | None = None,
) -> Any:
    """Alpha ``(N, H, W)`` float32 on ``backend.device`` for uint8 frames ``(N, H, W, 3)``, run at height x width.

    ``run`` maps the device image to its alpha (default ``backend.infer_tensor``; the keyframe scheduler);
    ``upsample`` brings it to the frames' size from (alpha, image, uint8 frames on the device), else bilinear.
    """
    import torch

    # no_grad, not inference_mode: the caller may composite in place on the alpha afterwards.
    with torch.no_grad():
        uploaded = torch.from_numpy(np.ascontiguousarray(frames)).to(backend.device)
        image = frames_to_image(uploaded, height, width, backend.device)
        alpha = (run or backend.infer_tensor)(image)
        if upsample is not None:
            alpha = upsample(alpha, image, uploaded)
        return alpha_to_frames(alpha, frames.shape[1], frames.shape[2])
