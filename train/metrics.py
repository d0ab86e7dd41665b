"""Matting evaluation metrics: SAD, MSE, Grad and Conn as Deep Image Matting defines them.

The definitions follow the MATLAB evaluation code released with Deep Image Matting (Xu et al.,
CVPR 2017), re-derived here for float alphas in [0, 1] (the MATLAB code takes 0-255 images and
divides by 255 first). SAD, Grad and Conn are reported divided by 1000, as in the paper's tables.

Every metric is summed over a region: the whole image when no trimap is given (trimap-free
evaluation, the SPG-IM setting) or the trimap's unknown pixels (value 128) when one is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["aggregate", "conn", "evaluate", "grad", "mse", "sad"]

METRICS = ("sad", "mse", "grad", "conn")
UNKNOWN = 128

GRAD_SIGMA = 1.4
# gaussgradient's cut-off: the kernel extends until the Gaussian falls below this value.
GRAD_EPSILON = 1e-2
CONN_STEP = 0.1
# d = alpha - l_map below this counts as connected (phi = 1).
CONN_THETA = 0.15

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def _check_alpha(name: str, alpha: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(alpha)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point alpha in [0, 1], got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (H, W), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    # Written so that NaN fails too.
    if not np.all((arr >= 0.0) & (arr <= 1.0)):
        raise ValueError(f"{name} has values outside [0, 1] (or NaN); alphas must be floats in [0, 1]")
    return arr.astype(np.float64, copy=False)


def _prepare(
    pred: npt.ArrayLike, gt: npt.ArrayLike, trimap: npt.ArrayLike | None
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Validate the inputs; return float64 pred and gt and the boolean evaluation region."""
    p = _check_alpha("pred", pred)
    g = _check_alpha("gt", gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    if trimap is None:
        return p, g, np.ones(p.shape, dtype=bool)
    t = np.asarray(trimap)
    if t.shape != p.shape:
        raise ValueError(f"trimap shape {t.shape} differs from pred/gt shape {p.shape}")
    return p, g, t == UNKNOWN


def _sad(p: FloatArray, g: FloatArray, region: BoolArray) -> float:
    return float(np.abs(p - g)[region].sum() / 1000.0)


def _mse(p: FloatArray, g: FloatArray, region: BoolArray) -> float:
    count = int(np.count_nonzero(region))
    if count == 0:
        # DIM's 0/0; reported as NaN rather than a made-up number.
        return math.nan
    return float(np.square(p - g)[region].sum() / count)


def _gauss(x: FloatArray, sigma: float) -> FloatArray:
    out: FloatArray = np.exp(-(x**2) / (2.0 * sigma**2)) / (sigma * math.sqrt(2.0 * math.pi))
    return out


def _gauss_kernels(sigma: float) -> tuple[FloatArray, FloatArray]:
    """1-D factors of DIM's gaussgradient kernel: (Gaussian, derivative of Gaussian), each unit-norm.

    DIM builds the 2-D kernel hx(i, j) = gauss(i) * dgauss(j) and divides it by its Frobenius
    norm; that norm is the product of the two 1-D norms, so normalising each factor is the same
    kernel and lets the filter run as two 1-D passes.
    """
    halfsize = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * GRAD_EPSILON)))
    x = np.arange(-halfsize, halfsize + 1, dtype=np.float64)
    g = _gauss(x, sigma)
    dg = -x * g / sigma**2
    return g / np.sqrt(np.sum(g * g)), dg / np.sqrt(np.sum(dg * dg))


def _gradient_magnitude(alpha: FloatArray, sigma: float = GRAD_SIGMA) -> FloatArray:
    """|grad alpha| with DIM's gaussgradient: convolution, replicated borders ('nearest')."""
    g, dg = _gauss_kernels(sigma)
    # x derivative along columns (axis 1), smoothing along rows; y is the transpose.
    gx = ndimage.convolve1d(ndimage.convolve1d(alpha, dg, axis=1, mode="nearest"), g, axis=0, mode="nearest")
    gy = ndimage.convolve1d(ndimage.convolve1d(alpha, dg, axis=0, mode="nearest"), g, axis=1, mode="nearest")
    out: FloatArray = np.sqrt(gx * gx + gy * gy)
    return out


def _grad(p: FloatArray, g: FloatArray, region: BoolArray) -> float:
    err = np.square(_gradient_magnitude(p) - _gradient_magnitude(g))
    return float(err[region].sum() / 1000.0)


def _largest_component(mask: BoolArray) -> BoolArray:
    """The largest 4-connected component of ``mask`` (all False when ``mask`` is empty).

    Ties go to the component met first in column-major order, as MATLAB's bwconncomp + max
    pick it (scipy numbers components in row-major order).
    """
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    best = int(np.argmax(sizes))
    tied = np.flatnonzero(sizes == sizes[best])
    if tied.size > 1:
        rows, cols = np.nonzero(np.isin(labels, tied))
        first = int(np.argmin(cols * mask.shape[0] + rows))
        best = int(labels[rows[first], cols[first]])
    out: BoolArray = labels == best
    return out


def _conn(p: FloatArray, g: FloatArray, region: BoolArray) -> float:
    n_steps = round(1.0 / CONN_STEP)
    # j / n rather than j * step: 0.3 is 0.3, so alphas that sit exactly on a threshold behave.
    thresholds = np.arange(n_steps + 1, dtype=np.float64) / n_steps
    # Last threshold at which each pixel was still in the largest component; pixels that never
    # leave it keep 1.
    l_map = np.ones(p.shape)
    pending = np.ones(p.shape, dtype=bool)
    for i in range(1, n_steps + 1):
        t = thresholds[i]
        omega = _largest_component((p >= t) & (g >= t))
        l_map[pending & ~omega] = thresholds[i - 1]
        pending &= omega
        if not pending.any():
            break
    d_p = p - l_map
    d_g = g - l_map
    phi_p = 1.0 - d_p * (d_p >= CONN_THETA)
    phi_g = 1.0 - d_g * (d_g >= CONN_THETA)
    return float(np.abs(phi_p - phi_g)[region].sum() / 1000.0)


def sad(pred: npt.ArrayLike, gt: npt.ArrayLike, trimap: npt.ArrayLike | None = None) -> float:
    """Sum of absolute differences, divided by 1000.

    Args:
        pred: predicted alpha, float array (H, W) with values in [0, 1].
        gt: ground-truth alpha, float array (H, W) with values in [0, 1].
        trimap: optional (H, W) trimap, 0 / 128 / 255; only pixels equal to 128 are evaluated.
            None evaluates the whole image.

    Returns:
        sum over the region of |pred - gt|, divided by 1000.

    Raises:
        ValueError: shapes differ or are not 2-D, or an alpha is not a float array in [0, 1].
    """
    return _sad(*_prepare(pred, gt, trimap))


def mse(pred: npt.ArrayLike, gt: npt.ArrayLike, trimap: npt.ArrayLike | None = None) -> float:
    """Mean squared error over the region.

    Args:
        pred: predicted alpha, float array (H, W) with values in [0, 1].
        gt: ground-truth alpha, float array (H, W) with values in [0, 1].
        trimap: optional (H, W) trimap; only pixels equal to 128 are evaluated. None: whole image.

    Returns:
        sum over the region of (pred - gt)^2 divided by the number of pixels in the region;
        NaN when the region is empty (a trimap with no unknown pixel).

    Raises:
        ValueError: shapes differ or are not 2-D, or an alpha is not a float array in [0, 1].
    """
    return _mse(*_prepare(pred, gt, trimap))


def grad(pred: npt.ArrayLike, gt: npt.ArrayLike, trimap: npt.ArrayLike | None = None) -> float:
    """Gradient error: squared difference of Gaussian-derivative gradient magnitudes, / 1000.

    Gradients use DIM's gaussgradient with sigma 1.4: a 9 x 9 derivative-of-Gaussian kernel
    (half-size 4), unit Frobenius norm, convolved with replicated borders.

    Args:
        pred: predicted alpha, float array (H, W) with values in [0, 1].
        gt: ground-truth alpha, float array (H, W) with values in [0, 1].
        trimap: optional (H, W) trimap; only pixels equal to 128 are evaluated. None: whole image.

    Returns:
        sum over the region of (|grad pred| - |grad gt|)^2, divided by 1000.

    Raises:
        ValueError: shapes differ or are not 2-D, or an alpha is not a float array in [0, 1].
    """
    return _grad(*_prepare(pred, gt, trimap))


def conn(pred: npt.ArrayLike, gt: npt.ArrayLike, trimap: npt.ArrayLike | None = None) -> float:
    """Connectivity error with threshold step 0.1, divided by 1000.

    For t = 0.1, 0.2, ..., 1.0 the largest 4-connected component of (pred >= t) & (gt >= t) is
    found; a pixel's l_map is the last threshold before the first one at which it is outside that
    component (1 if it never is). With d = alpha - l_map, phi = 1 - d * (d >= 0.15).

    Args:
        pred: predicted alpha, float array (H, W) with values in [0, 1].
        gt: ground-truth alpha, float array (H, W) with values in [0, 1].
        trimap: optional (H, W) trimap; only pixels equal to 128 are evaluated. None: whole image.

    Returns:
        sum over the region of |phi(pred) - phi(gt)|, divided by 1000.

    Raises:
        ValueError: shapes differ or are not 2-D, or an alpha is not a float array in [0, 1].
    """
    return _conn(*_prepare(pred, gt, trimap))


def evaluate(pred: npt.ArrayLike, gt: npt.ArrayLike, trimap: npt.ArrayLike | None = None) -> dict[str, float]:
    """All four metrics of one image, validating the inputs once.

    Args:
        pred: predicted alpha, float array (H, W) with values in [0, 1].
        gt: ground-truth alpha, float array (H, W) with values in [0, 1].
        trimap: optional (H, W) trimap; only pixels equal to 128 are evaluated. None: whole image.

    Returns:
        {"sad": ..., "mse": ..., "grad": ..., "conn": ...}, scaled as the single-metric functions.

    Raises:
        ValueError: shapes differ or are not 2-D, or an alpha is not a float array in [0, 1].
    """
    p, g, region = _prepare(pred, gt, trimap)
    return {
        "sad": _sad(p, g, region),
        "mse": _mse(p, g, region),
        "grad": _grad(p, g, region),
        "conn": _conn(p, g, region),
    }


def _summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"count": len(records)}
    for key in METRICS:
        out[key] = math.fsum(float(r[key]) for r in records) / len(records) if records else None
    return out


def aggregate(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean metrics over a dataset, overall and split into single- and multi-object images.

    Args:
        records: one dict per image with keys "name", "multi_object" (bool), "sad", "mse",
            "grad" and "conn" (as returned by :func:`evaluate`, plus the two labels).

    Returns:
        {"all": ..., "single": ..., "multi": ...}, each {"count": int, "sad": mean, "mse": mean,
        "grad": mean, "conn": mean}; the means are None for a group with no images. A NaN metric
        (MSE of an empty region) makes its group's mean NaN.

    Raises:
        ValueError: a record lacks one of the keys.
    """
    required = ("name", "multi_object", *METRICS)
    for i, record in enumerate(records):
        missing = [key for key in required if key not in record]
        if missing:
            raise ValueError(f"record {i} ({record.get('name', '?')!r}) lacks keys {missing}")
    return {
        "all": _summary(records),
        "single": _summary([r for r in records if not r["multi_object"]]),
        "multi": _summary([r for r in records if r["multi_object"]]),
    }
