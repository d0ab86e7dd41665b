"""Backgrounds and compositing: the alpha is applied once per frame, for every output that needs it.

Images stay in the input's stored orientation; a background is prepared upright (as the viewer
sees the video) and turned into the stored orientation, so it shows upright after the player
applies the display rotation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from spgim.errors import SpgimError

from .sources import IMAGE_SUFFIXES

GREEN = (0, 177, 64)  # chroma-key green


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The image as displayed: ``rotation`` is the display matrix's counter-clockwise angle."""
    return np.ascontiguousarray(np.rot90(image, k=(rotation // 90) % 4)) if rotation % 360 else image


def stored(image: np.ndarray, rotation: int) -> np.ndarray:
    """The inverse of :func:`upright`."""
    return np.ascontiguousarray(np.rot90(image, k=(-rotation // 90) % 4)) if rotation % 360 else image


class Background:
    """``green``, ``#RRGGBB``, an image file, or a video file (looped, resized), as uint8 RGB frames.

    Args:
        spec: what to put behind the subject.
        width, height: the stored frame size.
        rotation: the input's display rotation.
    """

    def __init__(self, spec: str, width: int, height: int, rotation: int = 0) -> None:
        self.width, self.height, self.rotation = width, height, rotation
        self.video: Any = None
        self.still: np.ndarray | None = None
        colour = _colour(spec)
        if colour is not None:
            self.still = np.empty((height, width, 3), np.uint8)
            self.still[:] = colour
            return
        path = Path(spec)
        if not path.is_file():
            raise SpgimError(f"background {spec!r} is not green, #RRGGBB, or an existing image or video file")
        if path.suffix.lower() in IMAGE_SUFFIXES:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise SpgimError(f"background {path}: not a readable image")
            self.still = self._fit(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            return
        self.path = path
        self._open_video()

    def _open_video(self) -> None:
        import av

        try:
            self.video = av.open(str(self.path), metadata_errors="replace")
            if not self.video.streams.video:
                raise SpgimError(f"background {self.path} has no video stream")
            self._frames = self.video.decode(self.video.streams.video[0])
        except av.error.FFmpegError as error:
            raise SpgimError(f"background {self.path} cannot be read: {error}") from None

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        """Cover the displayed frame (scale, centre-crop), then turn into the stored orientation."""
        display_h, display_w = (self.width, self.height) if self.rotation % 180 else (self.height, self.width)
        scale = max(display_w / rgb.shape[1], display_h / rgb.shape[0])
        size = (max(display_w, round(rgb.shape[1] * scale)), max(display_h, round(rgb.shape[0] * scale)))
        resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        top, left = (resized.shape[0] - display_h) // 2, (resized.shape[1] - display_w) // 2
        return stored(resized[top : top + display_h, left : left + display_w], self.rotation)

    def next(self) -> np.ndarray:
        """The background for the next frame."""
        if self.still is not None:
            return self.still
        for _ in range(2):
            for frame in self._frames:
                return self._fit(frame.to_ndarray(format="rgb24"))
            self.video.close()  # looped: start again from the first frame
            self._open_video()
        raise SpgimError(f"background {self.path} has no decodable frames")

    def close(self) -> None:
        """Release a background video."""
        if self.video is not None:
            self.video.close()


def _colour(spec: str) -> tuple[int, int, int] | None:
    if spec.lower() == "green":
        return GREEN
    if re.fullmatch(r"#[0-9a-fA-F]{6}", spec):
        return int(spec[1:3], 16), int(spec[3:5], 16), int(spec[5:7], 16)
    return None


def composite(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """``alpha * rgb + (1 - alpha) * background`` as uint8; ``alpha`` float32 (H, W) in [0, 1]."""
    # OpenCV's SIMD blend: 2.7 ms for 1280x720 where the numpy float expression took 24 ms.
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    blended: np.ndarray = cv2.blendLinear(rgb, background, alpha, 1.0 - alpha)
    return blended


def alpha_u8(alpha: np.ndarray) -> np.ndarray:
    """The alpha as a uint8 greyscale image."""
    return np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)


def rgba(rgb: np.ndarray, alpha8: np.ndarray) -> np.ndarray:
    """The frame as foreground with its alpha plane (the model predicts alpha only; colours are the frame's)."""
    return np.dstack([rgb, alpha8])


def composite_on_device(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray, device: str) -> np.ndarray:
    """:func:`composite` on a CUDA device: one upload of frame and background, one download of the result."""
    import torch

    frame = torch.from_numpy(rgb).to(device, non_blocking=True).float()
    back = torch.from_numpy(background).to(device, non_blocking=True).float()
    a = torch.from_numpy(alpha).to(device, non_blocking=True)[..., None]
    out = (back + a * (frame - back) + 0.5).clamp_(0, 255).to(torch.uint8)
    result: np.ndarray = out.cpu().numpy()
    return result
