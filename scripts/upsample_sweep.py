"""Guided upsampling's radius and eps against bilinear, on frames with sharp edges (how the defaults were chosen).

Four composites of skimage photos (a star-shaped foreground photo over a background photo), 1280x720, JPEG q80;
the working alpha is the truth area-downsampled to 512x288 and blurred by a Gaussian (``--blur`` px at the working
size). Prints the mean absolute error against the sharp truth, whole frame / a 25 px band around the edges, for
bilinear upsampling and for :class:`~spgim.train.models.upsample.GuidedUpsampler` over a radius x eps grid.

    .venv/bin/python scripts/upsample_sweep.py --blur 1 --blur 2

Measured (2 threads): blur 1: bilinear 0.0043/0.071; r=1: eps 1e-5 0.0039/0.063, 1e-4 0.0039/0.064,
1e-3 0.0043/0.070, 1e-2 0.0052/0.084; r=2 0.0047..0.0066, r=3 0.0058..0.0084 (worse than bilinear).
blur 2: bilinear 0.0080/0.130; r=1 eps 1e-4 0.0077/0.126; r=2 0.0083/0.133.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from skimage import data

from spgim.train.models.upsample import GuidedUpsampler

FRAME_HW = (720, 1280)
WORK_HW = (288, 512)
PAIRS = [("chelsea", "coffee"), ("astronaut", "rocket"), ("coffee", "astronaut"), ("rocket", "chelsea")]
RADII = (1, 2, 3)
EPSILONS = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2)


def _star(k: int) -> np.ndarray:
    height, width = FRAME_HW
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = 0.4 * k
    u = (xx - width * (0.35 + 0.1 * k)) * np.cos(angle) + (yy - height * 0.5) * np.sin(angle)
    v = -(xx - width * (0.35 + 0.1 * k)) * np.sin(angle) + (yy - height * 0.5) * np.cos(angle)
    return (np.hypot(u, v) < height * 0.3 * (1 + 0.25 * np.cos(5 * np.arctan2(v, u)))).astype(np.float32)


def _score(alpha: np.ndarray, truth: np.ndarray, band: np.ndarray) -> np.ndarray:
    error = np.abs(alpha - truth)
    return np.array([error.mean(), error[band].mean()])


def sweep(blur: float) -> dict[object, np.ndarray]:
    """Mean (whole, edge band) absolute errors per method, averaged over the composites."""
    height, width = FRAME_HW
    photos = {
        name: cv2.resize(getattr(data, name)()[..., :3], (width, height), interpolation=cv2.INTER_CUBIC)
        for name in {n for pair in PAIRS for n in pair}
    }
    totals: dict[object, np.ndarray] = {}
    for k, (front, back) in enumerate(PAIRS):
        truth = _star(k)
        composite = truth[..., None] * photos[front] + (1 - truth[..., None]) * photos[back]
        _, encoded = cv2.imencode(
            ".jpg", np.clip(np.round(composite), 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 80]
        )
        frame = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        image = cv2.resize(frame, WORK_HW[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        low = cv2.GaussianBlur(cv2.resize(truth, WORK_HW[::-1], interpolation=cv2.INTER_AREA), (0, 0), blur)
        edges = cv2.Canny((truth * 255).astype(np.uint8), 50, 150) > 0
        band = cv2.dilate(edges.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0

        bilinear = np.clip(cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
        totals["bilinear"] = totals.get("bilinear", 0) + _score(bilinear, truth, band) / len(PAIRS)
        inputs = (
            torch.from_numpy(low)[None, None],
            torch.from_numpy(image.transpose(2, 0, 1).copy())[None],
            torch.from_numpy(frame)[None],
        )
        for radius in RADII:
            for eps in EPSILONS:
                with torch.no_grad():
                    guided = GuidedUpsampler(radius, eps)(*inputs)[0, 0].numpy()
                totals[(radius, eps)] = totals.get((radius, eps), 0) + _score(guided, truth, band) / len(PAIRS)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blur", type=float, action="append", help="Gaussian sigma of the working alpha (repeat)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for blur in args.blur or [1.0]:
        totals = sweep(blur)
        whole, edge = totals.pop("bilinear")
        print(f"blur {blur}: bilinear {whole:.4f}/{edge:.3f}")
        for radius in RADII:
            cells = [f"{eps:g} {totals[(radius, eps)][0]:.4f}/{totals[(radius, eps)][1]:.3f}" for eps in EPSILONS]
            print(f"  r={radius}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
