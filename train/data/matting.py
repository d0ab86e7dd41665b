"""Datasets over the composition layout of docs/data-layout.md (Composition-1K and alike).

:class:`MattingTrainDataset` composites each training foreground over random backgrounds on the
fly, with Deep Image Matting's augmentation; :class:`MattingTestDataset` reads the fixed test
composites at full resolution. Every path is checked when a dataset is built, so a broken
dataset fails there with one line naming the file, not deep inside a DataLoader worker.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from spgim.errors import SpgimError

from ..models.spd import saliency_target
from .compose import composite
from .images import (
    DataReadError,
    jitter_colour,
    limit_cv2_threads_in_worker,
    list_images,
    pair_images,
    read_grey,
    read_rgb,
    resize,
    to_tensor,
)


def _check_same_size(fg: NDArray[np.uint8], alpha: NDArray[np.uint8], fg_path: Path, alpha_path: Path) -> None:
    if fg.shape[:2] != alpha.shape[:2]:
        raise DataReadError(
            f"{alpha_path} is {alpha.shape[1]}x{alpha.shape[0]} but {fg_path} is "
            f"{fg.shape[1]}x{fg.shape[0]}; an image and its alpha must be the same size"
        )


def _crop_padded(image: NDArray[np.uint8], top: int, left: int, size: int) -> NDArray[np.uint8]:
    """``image[top:top+size, left:left+size]`` where the window may reach outside: zeros there."""
    out = np.zeros((size, size, *image.shape[2:]), dtype=image.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, image.shape[0]), min(left + size, image.shape[1])
    out[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return out


class MattingTrainDataset(Dataset[dict[str, Tensor]]):
    """Composites of ``DATA/train/fg`` over ``DATA/train/bg`` with Deep Image Matting augmentation.

    An epoch holds ``len(foregrounds) * bg_per_fg`` samples (Composition-1K: 431 x 100), item
    ``i`` using foreground ``i % len(foregrounds)`` over a background drawn at random. A sample is
    a function of ``(seed, epoch, index)`` only, so it is the same in any DataLoader worker; call
    :meth:`set_epoch` before each epoch's iterator is made (not with ``persistent_workers``).

    Each item is a dict of float32 tensors: ``"image"`` ``(3, size, size)`` composite in [0, 1],
    ``"alpha"`` ``(1, size, size)`` in [0, 1] and ``"mask_target"``
    ``(1, size / mask_stride, size / mask_stride)``, S(a*) of Eq. 2.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        size: int,
        bg_per_fg: int = 100,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        mask_stride: int = 4,
        mask_sigma: float = 1.0,
        scale_range: tuple[float, float] = (0.75, 1.5),
        flip: bool = True,
        colour_jitter: tuple[float, float, float] = (0.02, 0.2, 0.2),
    ) -> None:
        """Args:
        root: DATA, the folder holding ``train/fg``, ``train/alpha`` and ``train/bg``.
        size: side of the square training crops, a positive multiple of 32.
        bg_per_fg: composites per foreground in an epoch.
        samples_per_epoch: the epoch's length instead of ``len(foregrounds) * bg_per_fg``.
        seed: base of every sample's random numbers.
        mask_stride: the saliency mask's output stride (SPD predicts at 4).
        mask_sigma: Gaussian sigma of S(a*), in mask pixels; 0 disables the blur.
        scale_range: a crop covers ``size * scale`` pixels of the foreground, resized to ``size``.
        flip: random horizontal flips.
        colour_jitter: foreground hue shift (fraction of a turn), saturation and brightness scaling.
        """
        if size <= 0 or size % 32:
            raise SpgimError(f"training crop size {size} must be a positive multiple of 32")
        if mask_stride <= 0 or size % mask_stride:
            raise SpgimError(f"mask stride {mask_stride} must divide the crop size {size}")
        if bg_per_fg <= 0 or (samples_per_epoch is not None and samples_per_epoch <= 0):
            raise SpgimError("bg_per_fg and samples_per_epoch must be positive")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise SpgimError(f"crop scale range {scale_range} must be two positive numbers, low to high")
        train = Path(root) / "train"
        fg_dir, alpha_dir = train / "fg", train / "alpha"
        self.fg_paths = list_images(fg_dir, what="foreground colours, one RGB image per matte")
        self.alpha_paths = list_images(alpha_dir, what="greyscale alpha mattes named like the foregrounds")
        self.names = pair_images(self.fg_paths, fg_dir, self.alpha_paths, alpha_dir)
        self.bg_paths = list(list_images(train / "bg", what="background images to composite over").values())
        self.size, self.seed, self.epoch = size, seed, 0
        self.length = samples_per_epoch if samples_per_epoch is not None else len(self.names) * bg_per_fg
        self.mask_size = (size // mask_stride, size // mask_stride)
        self.mask_sigma = mask_sigma
        self.scale_range, self.flip, self.colour_jitter = scale_range, flip, colour_jitter

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose composites :meth:`__getitem__` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} out of range for an epoch of {self.length}")
        limit_cv2_threads_in_worker()
        rng = np.random.default_rng([self.seed, self.epoch, index])
        name = self.names[index % len(self.names)]
        fg_path, alpha_path = self.fg_paths[name], self.alpha_paths[name]
        fg, alpha = read_rgb(fg_path), read_grey(alpha_path)
        _check_same_size(fg, alpha, fg_path, alpha_path)

        top, left, crop, canvas = self._window(alpha, rng)
        fg = resize(_crop_padded(fg, top, left, crop), self.size, self.size)
        alpha = resize(_crop_padded(alpha, top, left, crop), self.size, self.size)
        if self.flip and rng.random() < 0.5:
            fg, alpha = fg[:, ::-1], alpha[:, ::-1]
        hue, saturation, value = self.colour_jitter
        fg = jitter_colour(fg, rng, hue=hue, saturation=saturation, value=value)
        bg = self._background(rng, top, left, crop, canvas)

        merged = composite(np.ascontiguousarray(fg), bg, np.ascontiguousarray(alpha))
        alpha_t = to_tensor(alpha)
        mask = saliency_target(alpha_t[None], self.mask_size, self.mask_sigma)[0]
        return {"image": to_tensor(merged), "alpha": alpha_t, "mask_target": mask}

    def _window(self, alpha: NDArray[np.uint8], rng: np.random.Generator) -> tuple[int, int, int, tuple[int, ...]]:
        """A square crop window ``(top, left, side)`` in foreground coordinates, centred on a random
        unknown pixel when there is one (Deep Image Matting), plus the ``(y0, x0, y1, x1)`` canvas:
        the foreground padded (centred) to at least the window's side."""
        h, w = alpha.shape
        crop = max(1, round(self.size * rng.uniform(*self.scale_range)))
        y0, x0 = -(max(0, crop - h) // 2), -(max(0, crop - w) // 2)
        y1, x1 = y0 + max(h, crop), x0 + max(w, crop)
        unknown = np.flatnonzero((alpha > 0) & (alpha < 255))
        if unknown.size:
            cy, cx = divmod(int(unknown[rng.integers(unknown.size)]), w)
            # Clamping into the canvas keeps (cy, cx) inside the window.
            top = int(np.clip(cy - crop // 2, y0, y1 - crop))
            left = int(np.clip(cx - crop // 2, x0, x1 - crop))
        else:
            top = int(rng.integers(y0, y1 - crop + 1))
            left = int(rng.integers(x0, x1 - crop + 1))
        return top, left, crop, (y0, x0, y1, x1)

    def _background(
        self, rng: np.random.Generator, top: int, left: int, crop: int, canvas: tuple[int, ...]
    ) -> NDArray[np.uint8]:
        """The crop window's part of a random background resized to cover the canvas, as
        ``(size, size, 3)``; only the window is resampled, not the whole background."""
        path = self.bg_paths[int(rng.integers(len(self.bg_paths)))]
        bg = read_rgb(path)
        bh, bw = bg.shape[:2]
        y0, x0, y1, x1 = canvas
        scale = max((y1 - y0) / bh, (x1 - x0) / bw)
        oy = rng.uniform(0, bh * scale - (y1 - y0))
        ox = rng.uniform(0, bw * scale - (x1 - x0))
        sy0, sx0 = (top - y0 + oy) / scale, (left - x0 + ox) / scale
        iy0, ix0 = min(int(sy0), bh - 1), min(int(sx0), bw - 1)
        iy1 = max(iy0 + 1, min(bh, math.ceil(sy0 + crop / scale)))
        ix1 = max(ix0 + 1, min(bw, math.ceil(sx0 + crop / scale)))
        bg = resize(np.ascontiguousarray(bg[iy0:iy1, ix0:ix1]), self.size, self.size)
        if self.flip and rng.random() < 0.5:
            bg = bg[:, ::-1]
        return np.ascontiguousarray(bg)


def load_multi_object_flags(root: str | Path) -> dict[str, bool]:
    """``name -> multi_object`` for the test scenes listed in ``DATA/scenes.json`` ({} without one)."""
    path = Path(root) / "scenes.json"
    if not path.is_file():
        return {}
    try:
        scenes = json.loads(path.read_text(encoding="utf-8"))["scenes"]
        return {str(s["name"]): bool(s.get("multi_object", False)) for s in scenes if s.get("split", "test") == "test"}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise SpgimError(
            f"cannot read {path} ({reason}); expected {{'scenes': [{{'name', 'multi_object'}}]}}"
        ) from None


class MattingTestDataset(Dataset[dict[str, Any]]):
    """The test composites of ``DATA/test``: ``merged/<name>`` with ``alpha/<name>``.

    Each item is a dict: ``"image"`` ``(3, H, W)`` float32 in [0, 1] (at ``size`` when given, else
    full resolution); ``"alpha"`` ``(1, H0, W0)`` float32 ground truth and ``"trimap"``
    ``(1, H0, W0)`` uint8 (0/128/255) or None, both always at full resolution; ``"name"``; and
    ``"multi_object"`` from ``DATA/scenes.json`` (False without one). Images differ in size and
    the trimap may be None, so iterate with ``DataLoader(dataset, batch_size=None)``.
    """

    def __init__(self, root: str | Path, *, size: int | tuple[int, int] | None = None) -> None:
        """Args:
        root: DATA, the folder holding ``test/merged`` and ``test/alpha``.
        size: resize every image to ``(height, width)`` (an int: square) for a fixed-shape engine;
            the ground truth stays at full resolution, so resize predictions back to it.
        """
        test = Path(root) / "test"
        merged_dir, alpha_dir, trimap_dir = test / "merged", test / "alpha", test / "trimaps"
        self.merged_paths = list_images(merged_dir, what="test images (foregrounds composited over backgrounds)")
        self.alpha_paths = list_images(alpha_dir, what="ground-truth alpha mattes named like the test images")
        self.names = pair_images(self.merged_paths, merged_dir, self.alpha_paths, alpha_dir)
        self.trimap_paths: dict[str, Path] = {}
        if trimap_dir.is_dir():
            self.trimap_paths = list_images(trimap_dir, what="trimaps named like the test images")
            pair_images(self.merged_paths, merged_dir, self.trimap_paths, trimap_dir)
        self.multi_object = load_multi_object_flags(root)
        if isinstance(size, int):
            size = (size, size)
        if size is not None and min(size) <= 0:
            raise SpgimError(f"test image size {size} must be positive")
        self.size = size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        limit_cv2_threads_in_worker()
        name = self.names[index]
        image, alpha = read_rgb(self.merged_paths[name]), read_grey(self.alpha_paths[name])
        _check_same_size(image, alpha, self.merged_paths[name], self.alpha_paths[name])
        trimap = None
        if name in self.trimap_paths:
            trimap_array = read_grey(self.trimap_paths[name])
            _check_same_size(image, trimap_array, self.merged_paths[name], self.trimap_paths[name])
            trimap = torch.from_numpy(trimap_array)[None]
        if self.size is not None:
            image = resize(image, self.size[1], self.size[0])
        return {
            "image": to_tensor(image),
            "alpha": to_tensor(alpha),
            "trimap": trimap,
            "name": name,
            "multi_object": self.multi_object.get(name, False),
        }


def pad_to_multiple(image: Tensor, multiple: int = 32) -> tuple[Tensor, tuple[int, int]]:
    """Pad ``(..., H, W)`` on the bottom and right to multiples of ``multiple`` by reflection.

    Returns the padded tensor and the original ``(H, W)`` for :func:`crop_to`.
    """
    h, w = image.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return image, (h, w)
    # Reflection needs the pad to be smaller than the side; tiny images replicate their edge.
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    flat = image.reshape(-1, 1, h, w)
    source = flat if flat.is_floating_point() else flat.float()
    padded = F.pad(source, (0, pad_w, 0, pad_h), mode=mode).to(image.dtype)
    return padded.reshape(*image.shape[:-2], h + pad_h, w + pad_w), (h, w)


def crop_to(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple`: the top-left ``(H, W)`` of ``(..., H', W')``."""
    return image[..., : size[0], : size[1]]
