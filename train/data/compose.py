"""Eq. 1 of the paper, ``I = a F + (1 - a) B``, in the one form every writer and loader uses."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def composite(fg: NDArray[np.uint8], bg: NDArray[np.uint8], alpha: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Composite an 8-bit foreground over an 8-bit background with an 8-bit alpha.

    Computed in float32 with ``a = alpha / 255`` and rounded to the nearest integer, so that a
    dataset's merged test images can be reproduced exactly from its fg, bg and alpha files.

    Args:
        fg: ``(H, W, 3)`` uint8 foreground colours (straight, not premultiplied).
        bg: ``(H, W, 3)`` uint8 background.
        alpha: ``(H, W)`` uint8 alpha.

    Returns: ``(H, W, 3)`` uint8 composite.
    """
    if fg.shape != bg.shape or fg.shape[:2] != alpha.shape:
        raise ValueError(f"composite needs matching sizes, got fg {fg.shape}, bg {bg.shape}, alpha {alpha.shape}")
    a = alpha.astype(np.float32)[..., None] / np.float32(255.0)
    merged = fg.astype(np.float32) * a + bg.astype(np.float32) * (np.float32(1.0) - a)
    return np.clip(np.rint(merged), 0, 255).astype(np.uint8)
