"""Backgrounds of the scene generator: photographs shipped in scikit-image, and procedural textures.

Only the images stored inside the scikit-image wheel are used; the ones ``skimage.data`` would
download on first use are left out, so generation works offline.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import cv2
import numpy as np

from spgim.errors import SpgimError

from .shapes import F32, U8, pixel_grid

# skimage.data loaders whose files ship inside the wheel (checked with the network blocked).
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
)
TEXTURES = ("gradient", "stripes", "checkers", "noise", "blotches")
# How captions name each kind of background.
PHRASES = {
    "photo": "a photo",
    "gradient": "a colour gradient",
    "stripes": "a striped background",
    "checkers": "a checkered background",
    "noise": "a noisy texture",
    "blotches": "a blurry colour field",
}


@cache
def load_photo(name: str) -> U8:
    """One of :data:`PHOTOS` as ``(H, W, 3)`` uint8 RGB (greyscale photos are repeated)."""
    try:
        import skimage.data
    except ImportError as error:
        raise SpgimError("the scene generator needs scikit-image: pip install scikit-image") from error
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs: keep the left view
        image = image[0]
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    result = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    result.flags.writeable = False
    return result


# Mostly photos: the objects wear the textures' own patterns (stripes, checkers, noise), so over a
# texture "the object" is told apart by its outline alone. With half the backgrounds textures, the
# live SPD was no better than predicting nothing after 750 steps; photos only: 0.42 of that loss after
# 200 steps and half the demo clip's object found (see the reference runs in docs/notebook.md).
PHOTO_FRACTION = 0.85


def make_background(rng: np.random.Generator, size: int, photo_fraction: float = PHOTO_FRACTION) -> tuple[U8, str]:
    """A ``(size, size, 3)`` uint8 RGB background and its kind (``"photo"`` or one of TEXTURES)."""
    if rng.random() < photo_fraction:
        return photo_crop(PHOTOS[int(rng.integers(len(PHOTOS)))], rng, size), "photo"
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    image = _TEXTURE[kind](rng, size)
    image = image + rng.normal(0.0, 0.01, image.shape).astype(np.float32)
    return _to_u8(image), kind


def photo_crop(name: str, rng: np.random.Generator, size: int) -> U8:
    """A random square crop of a photo, resized to ``size``, maybe mirrored, tinted and relit."""
    photo = load_photo(name)
    height, width = photo.shape[:2]
    side = max(16, int(rng.uniform(0.35, 1.0) * min(height, width)))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = photo[top : top + side, left : left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    image = cv2.resize(crop, (size, size), interpolation=interpolation).astype(np.float32) / 255.0
    if rng.random() < 0.5:
        image = image[:, ::-1]
    gain = rng.uniform(0.85, 1.15, 3) if _is_grey(photo) else np.full(3, rng.uniform(0.85, 1.15))
    return _to_u8(image * gain.astype(np.float32))


def _is_grey(photo: U8) -> bool:
    return bool(np.array_equal(photo[::8, ::8, 0], photo[::8, ::8, 1]))


def _to_u8(image: F32) -> U8:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _colours(rng: np.random.Generator) -> tuple[F32, F32]:
    first = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    second = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    return first, second


def _along(rng: np.random.Generator, size: int) -> F32:
    """Pixel coordinate along a random direction, through the image centre."""
    xs, ys = pixel_grid(size)
    angle = rng.uniform(0.0, 2 * np.pi)
    return ((xs - size / 2) * np.cos(angle) + (ys - size / 2) * np.sin(angle)).astype(np.float32)


def _mix(first: F32, second: F32, weight: F32) -> F32:
    return (first * (1.0 - weight[..., None]) + second * weight[..., None]).astype(np.float32)


def _gradient(rng: np.random.Generator, size: int) -> F32:
    first, second = _colours(rng)
    weight = np.clip(_along(rng, size) / (size * 0.75) + 0.5, 0.0, 1.0)
    return _mix(first, second, weight)


def _stripes(rng: np.random.Generator, size: int) -> F32:
    first, second = _colours(rng)
    period = rng.uniform(6.0, size / 4)
    sharpness = rng.uniform(1.0, 8.0)
    wave = np.sin(2 * np.pi * _along(rng, size) / period)
    return _mix(first, second, np.clip(wave * sharpness * 0.5 + 0.5, 0.0, 1.0))


def _checkers(rng: np.random.Generator, size: int) -> F32:
    first, second = _colours(rng)
    cell = rng.uniform(size / 24, size / 4)
    xs, ys = pixel_grid(size)
    angle = rng.uniform(0.0, np.pi / 2)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = ys * np.cos(angle) - xs * np.sin(angle)
    parity = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(_mix(first, second, parity), (0, 0), 0.7), np.float32)


def _noise(rng: np.random.Generator, size: int) -> F32:
    first, second = _colours(rng)
    total = np.zeros((size, size, 3), np.float32)
    for octave in range(4):
        cells = 2 ** (octave + 2)
        layer = rng.uniform(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
        total += 0.5**octave * cv2.resize(layer, (size, size), interpolation=cv2.INTER_CUBIC)
    total /= 1.875
    return (first + (second - first) * total).astype(np.float32)


def _blotches(rng: np.random.Generator, size: int) -> F32:
    cells = int(rng.integers(3, 7))
    field = rng.uniform(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
    field = np.asarray(cv2.resize(field, (size, size), interpolation=cv2.INTER_CUBIC), np.float32)
    return np.asarray(cv2.GaussianBlur(field, (0, 0), size / 16), np.float32)


_TEXTURE: dict[str, Callable[[np.random.Generator, int], F32]] = {
    "gradient": _gradient,
    "stripes": _stripes,
    "checkers": _checkers,
    "noise": _noise,
    "blotches": _blotches,
}
