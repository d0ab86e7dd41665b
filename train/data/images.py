"""Image reading, folder listing and the small numpy/cv2 augmentations shared by the loaders.

Every failure is a :class:`~spgim.errors.SpgimError` whose one-line message names the file or
folder, so a broken dataset is reported the same way at construction and inside a worker.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from spgim.errors import SpgimError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# OpenCV prints its own decoder warnings to stderr; a bad file is reported once, by us, in one line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class DataReadError(SpgimError):
    """A sample's file could not be read: a :class:`SpgimError` that stays one line when a
    DataLoader worker raised it.

    The DataLoader re-raises a worker's exception as ``type(exc)(message)``, the message being
    "Caught ... in DataLoader worker process N" plus the worker's traceback; this constructor
    takes such a message back to the original line.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        if message.startswith("Caught ") and "\nOriginal Traceback" in message:
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            last = message.rstrip().rsplit("\n", 1)[-1]
            if last.startswith(prefix):
                message = last[len(prefix) :]
        super().__init__(message, exit_code=exit_code)


def _decode(path: Path, flags: int) -> NDArray[np.uint8]:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DataReadError(f"cannot read image {path} (no such file)") from None
    except OSError as exc:
        raise DataReadError(f"cannot read image {path} ({exc.strerror or exc})") from None
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataReadError(f"cannot read image {path} (corrupt or not an image)")
    if image.dtype == np.uint16:
        # Keep the 8 most significant bits: Eq. 1 and the losses work at 8-bit precision.
        image = np.right_shift(image, 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataReadError(f"cannot read image {path} (unsupported pixel type {image.dtype}, expected 8 or 16 bit)")
    return np.ascontiguousarray(image)


def read_rgb(path: Path) -> NDArray[np.uint8]:
    """An image file as ``(H, W, 3)`` uint8 RGB; greyscale and RGBA files are converted."""
    bgr = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def read_grey(path: Path) -> NDArray[np.uint8]:
    """A greyscale image file (alpha matte, trimap) as ``(H, W)`` uint8; colour files are converted."""
    return _decode(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)


def list_images(folder: Path, *, what: str) -> dict[str, Path]:
    """The images in ``folder`` keyed by file stem (``.png``, ``.jpg``, ``.jpeg``, any case).

    Args:
        folder: the folder to list.
        what: what the folder should hold, for the error message (e.g. ``"foreground PNGs"``).

    Raises SpgimError if the folder is missing, holds no image, or holds two images with one stem.
    """
    if not folder.is_dir():
        raise SpgimError(f"missing folder {folder}: it should hold {what}")
    images: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in images:
            raise SpgimError(f"two images named {path.stem} in {folder}: {images[path.stem].name} and {path.name}")
        images[path.stem] = path
    if not images:
        raise SpgimError(f"no images in {folder}: it should hold {what} (.png or .jpg)")
    return images


def pair_images(first: dict[str, Path], first_folder: Path, second: dict[str, Path], second_folder: Path) -> list[str]:
    """The names of two listings, which must match; else SpgimError naming a file without a partner."""
    for images, other, other_folder in ((first, second, second_folder), (second, first, first_folder)):
        for name, path in images.items():
            if name not in other:
                raise SpgimError(f"{path} has no matching {name}.png or {name}.jpg in {other_folder}")
    return sorted(first)


def resize(image: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """cv2 resize with area averaging when shrinking (no aliasing) and bilinear when enlarging."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width * height < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(image, (width, height), interpolation=interpolation), dtype=np.uint8)


def jitter_colour(
    image: NDArray[np.uint8], rng: np.random.Generator, *, hue: float, saturation: float, value: float
) -> NDArray[np.uint8]:
    """Random hue shift (fraction of a turn) and saturation/brightness scaling, each ``±amount``."""
    hsv = cv2.cvtColor(image.astype(np.float32) / np.float32(255.0), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + np.float32(360.0 * rng.uniform(-hue, hue))) % np.float32(360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * np.float32(1.0 + rng.uniform(-saturation, saturation)), 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] * np.float32(1.0 + rng.uniform(-value, value)), 0.0, 1.0)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(rgb * np.float32(255.0)), 0, 255).astype(np.uint8)


def to_tensor(image: NDArray[np.uint8]) -> Tensor:
    """``(H, W, C)`` or ``(H, W)`` uint8 -> ``(C, H, W)`` float32 in [0, 1]."""
    array = image[..., None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def limit_cv2_threads_in_worker() -> None:
    """One cv2 thread inside DataLoader workers: the workers are the parallelism, and cv2's own
    thread pool inherited over fork can deadlock."""
    if torch.utils.data.get_worker_info() is not None and cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)
