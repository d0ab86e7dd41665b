"""The images an INT8 export is calibrated on and the scenes its accuracy gate is measured on.

Calibration needs images like the ones the model will see, nothing else: ``--calibration DATA`` takes a folder of
images (any layout; read recursively), and without it the project's scene generator draws them, so an INT8 export
needs no download. The gate needs a truth: it always runs on generated scenes with their exact alpha, drawn from a
seed of their own, apart from the calibration seed and from the seeds training data is made with (0 and up).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from spgim.errors import SpgimError
from spgim.train.data.compose import composite
from spgim.train.data.synth import render_scene

from .io_spec import GraphSpec

# Far from the seeds `spgim data synth` is run with (0 and up by convention), and from each other.
CALIBRATION_SEED = 7_000_001
GATE_SEED = 7_000_002
DEFAULT_CALIBRATION_IMAGES = 200  # generated when --calibration is not given; a folder is read up to this many
GATE_SCENES = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Scenes:
    """Images ``(N, 1, 3, H, W)`` float32 RGB in [0, 1] (one batch of one per image) and, for gate scenes, their
    true alpha ``(N, H, W)`` float32 in [0, 1]."""

    images: list[np.ndarray]
    alphas: list[np.ndarray] | None
    origin: str


def fit(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``image`` (H, W, C) scaled to cover ``hw`` (height, width) and centre-cropped to it."""
    height, width = hw
    scale = max(height / image.shape[0], width / image.shape[1])
    size = (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    scaled = cv2.resize(image, size, interpolation=interpolation)
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return scaled[top : top + height, left : left + width]


def _as_input(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def generated_scenes(count: int, hw: tuple[int, int], seed: int) -> Scenes:
    """``count`` generated scenes (one to four objects over a background) at ``hw``, with their true alpha."""
    side = max(hw)
    images, alphas = [], []
    for index in range(count):
        scene = render_scene(seed, index, side, 1 + index % 4)
        merged = composite(scene.fg, scene.bg, scene.alpha)
        images.append(_as_input(fit(merged, hw)))
        alphas.append(fit(scene.alpha[..., None], hw).reshape(hw).astype(np.float32) / 255.0)
    return Scenes(images, alphas, f"generated (seed {seed}, {count} scenes)")


def calibration_scenes(folder: Path | None, hw: tuple[int, int], count: int = DEFAULT_CALIBRATION_IMAGES) -> Scenes:
    """The calibration images: up to ``count`` images of ``folder`` (sorted by path), or generated ones.

    Raises:
        SpgimError: the folder is missing, holds no image, or holds one that cannot be read.
    """
    if folder is None:
        return generated_scenes(count, hw, CALIBRATION_SEED)
    if not folder.is_dir():
        raise SpgimError(f"--calibration {folder} is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())[:count]
    if not paths:
        raise SpgimError(f"--calibration {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SpgimError(f"--calibration: {path} is not a readable image")
        images.append(_as_input(fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), hw)))
    return Scenes(images, None, f"{folder} ({len(images)} images)")


def gate_scenes(hw: tuple[int, int], count: int = GATE_SCENES) -> Scenes:
    """The held-out generated scenes the accuracy gate measures on."""
    return generated_scenes(count, hw, GATE_SEED)


@dataclass(frozen=True)
class BranchFeeds:
    """Per image, each branch's inputs by name as the fp32 pair makes them, and the fp32 pair's alpha."""

    spd: list[dict[str, np.ndarray]]
    spgm: list[dict[str, np.ndarray]]
    alpha: list[np.ndarray]


def fp32_feeds(
    models: dict[str, torch.nn.Module], specs: dict[str, GraphSpec], images: list[np.ndarray]
) -> BranchFeeds:
    """Run the fp32 pair (eager) on ``images``: SPD's inputs, SPGM's (SPD's outputs as its guide, a stream's
    first state: zeros, for a recurrent SPGM) and the alpha, per image.

    Args:
        models, specs: SPD's and SPGM's modules and graph specs, by branch.
    """
    spd, spgm = models["spd"], models["spgm"]
    # SPGM's inputs: the image, SPD's outputs, then a recurrent SPGM's state (io_spec.spgm_spec).
    state = specs["spgm"].inputs[1 + len(specs["spd"].outputs) :]
    spd_feeds, spgm_feeds, alphas = [], [], []
    with torch.no_grad():
        for image in images:
            tensor = torch.from_numpy(image)
            features = tuple(spd(tensor))
            height, width = image.shape[2:]
            zeros = tuple(torch.zeros(t.shape(1, height, width)) for t in state)
            outputs = spgm(tensor, *features, *zeros)
            alpha = outputs[0] if isinstance(outputs, tuple | list) else outputs
            spd_feeds.append(dict(zip(specs["spd"].input_names, [image], strict=True)))
            arrays = [image, *(t.numpy() for t in (*features, *zeros))]
            spgm_feeds.append(dict(zip(specs["spgm"].input_names, arrays, strict=True)))
            alphas.append(alpha.numpy()[0, 0])
    return BranchFeeds(spd_feeds, spgm_feeds, alphas)
