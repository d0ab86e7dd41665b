"""SAD / MSE / Grad / Conn against values derived by hand from Deep Image Matting's definitions."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from spgim.train.metrics import aggregate, conn, evaluate, grad, mse, sad

REL = 1e-12


def _trimap_band(h: int, w: int, lo: int, hi: int) -> np.ndarray:
    """Trimap: background left of column lo, unknown in [lo, hi), foreground from hi."""
    trimap = np.zeros((h, w), dtype=np.uint8)
    trimap[:, lo:hi] = 128
    trimap[:, hi:] = 255
    return trimap


def _dog_kernels() -> tuple[np.ndarray, np.ndarray]:
    """DIM's gaussgradient factors for sigma 1.4, built independently of the implementation.

    half-size = ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) * 1.4 * 0.01))) = ceil(3.62) = 4, so 9 taps.
    The Gaussian's constant factors cancel in the unit-norm normalisation.
    """
    sigma = 1.4
    x = np.arange(-4, 5, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * sigma**2))
    dg = -x * g
    return g / np.linalg.norm(g), dg / np.linalg.norm(dg)


# --- constant offsets ----------------------------------------------------------------------------


def test_constant_offset_whole_image() -> None:
    h, w, c = 6, 10, 0.5
    gt = np.full((h, w), 0.25)
    pred = gt + c  # 0.75: dyadic, so every difference is exact
    assert sad(pred, gt) == pytest.approx(c * h * w / 1000, rel=REL)
    assert mse(pred, gt) == pytest.approx(c**2, rel=REL)
    # Both images are flat: both gradient magnitudes are exactly zero.
    assert grad(pred, gt) == 0.0
    # Conn: t = 0.1, 0.2 keep everything connected, at t = 0.3 gt (0.25) drops out, so every
    # pixel's l_map is 0.2. d_pred = 0.55 >= 0.15 -> phi 0.45; d_gt = 0.05 -> phi 1.
    assert conn(pred, gt) == pytest.approx(0.55 * h * w / 1000, rel=1e-9)


def test_constant_offset_counts_only_unknown_pixels() -> None:
    h, w, c = 6, 10, 0.25
    gt = np.full((h, w), 0.5)
    pred = gt + c
    trimap = _trimap_band(h, w, 3, 7)
    n_unknown = h * 4
    assert sad(pred, gt, trimap) == pytest.approx(c * n_unknown / 1000, rel=REL)
    assert mse(pred, gt, trimap) == pytest.approx(c**2, rel=REL)
    assert grad(pred, gt, trimap) == 0.0


def test_errors_outside_unknown_region_are_ignored() -> None:
    h, w = 6, 10
    gt = np.full((h, w), 0.5)
    pred = gt.copy()
    trimap = _trimap_band(h, w, 3, 7)
    pred[:, :3] = 0.0
    pred[:, 7:] = 1.0
    assert sad(pred, gt, trimap) == 0.0
    assert mse(pred, gt, trimap) == 0.0
    assert sad(pred, gt) == pytest.approx((0.5 * h * 3 + 0.5 * h * 3) / 1000, rel=REL)


def test_mse_of_empty_region_is_nan() -> None:
    gt = np.full((4, 4), 0.5)
    trimap = np.zeros((4, 4), dtype=np.uint8)
    assert math.isnan(mse(gt * 0.5, gt, trimap))
    assert sad(gt * 0.5, gt, trimap) == 0.0


# --- shifted edge --------------------------------------------------------------------------------


def _step_edges(h: int, w: int, edge: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((h, w))
    gt[:, edge:] = 1.0
    pred = np.zeros((h, w))
    pred[:, edge - k :] = 1.0
    return pred, gt


def _expected_step_grad(h: int, w: int, edge: int, k: int) -> float:
    """Grad of two vertical step edges, by a 1-D derivation.

    Every column is constant, so the y derivative is zero and the smoothing along y multiplies
    the x-derivative profile by sum(g). The x profile is the row convolved with dg, borders
    replicated (imfilter 'replicate', 'conv').
    """
    g, dg = _dog_kernels()

    def profile(start: int) -> np.ndarray:
        row = np.zeros(w)
        row[start:] = 1.0
        return np.convolve(np.pad(row, 4, mode="edge"), dg, mode="valid") * g.sum()

    diff = np.abs(profile(edge - k)) - np.abs(profile(edge))
    return float(h * np.sum(diff**2) / 1000)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_shifted_edge(k: int) -> None:
    h, w, edge = 8, 32, 16
    pred, gt = _step_edges(h, w, edge, k)
    assert sad(pred, gt) == pytest.approx(k * h / 1000, rel=REL)
    assert mse(pred, gt) == pytest.approx(k * h / (h * w), rel=REL)
    assert grad(pred, gt) == pytest.approx(_expected_step_grad(h, w, edge, k), rel=1e-9)
    # gt's foreground is one component at every threshold; the k extra pred columns have
    # l_map 0, so d_pred = 1 -> phi 0 against d_gt = 0 -> phi 1: one unit per pixel.
    assert conn(pred, gt) == pytest.approx(k * h / 1000, rel=REL)


def test_shifted_edge_grad_grows_with_shift() -> None:
    h, w, edge = 8, 32, 16
    values = [grad(*_step_edges(h, w, edge, k)) for k in range(0, 6)]
    assert values[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(values))


def test_grad_matches_full_2d_kernel() -> None:
    """The separable filter equals DIM's 9 x 9 kernel normalised by its Frobenius norm."""
    g, dg = _dog_kernels()
    hx = np.outer(g, dg)
    hx /= np.sqrt(np.sum(hx**2))
    rng = np.random.default_rng(0)
    pred = rng.random((23, 31))
    gt = rng.random((23, 31))

    def magnitude(a: np.ndarray) -> np.ndarray:
        gx = ndimage.convolve(a, hx, mode="nearest")
        gy = ndimage.convolve(a, hx.T, mode="nearest")
        return np.sqrt(gx**2 + gy**2)

    expected = np.sum((magnitude(pred) - magnitude(gt)) ** 2) / 1000
    assert grad(pred, gt) == pytest.approx(expected, rel=1e-9)


# --- holes and connectivity ----------------------------------------------------------------------


@pytest.mark.parametrize("hole", [(slice(4, 5), slice(5, 6)), (slice(3, 5), slice(4, 7))])
def test_hole(hole: tuple[slice, slice]) -> None:
    h, w = 10, 12
    gt = np.ones((h, w))
    pred = np.ones((h, w))
    pred[hole] = 0.0
    area = int((gt - pred).sum())
    assert sad(pred, gt) == pytest.approx(area / 1000, rel=REL)
    assert mse(pred, gt) == pytest.approx(area / (h * w), rel=REL)
    # The hole never meets pred >= 0.1, so at t = 0.1 it leaves the (single, surrounding)
    # component and its l_map is the previous threshold, 0. Everything else stays to t = 1: l = 1.
    # Hole: d_pred = 0 -> phi 1, d_gt = 1 -> phi 0. Elsewhere d = 0 for both: phi 1 = 1.
    assert conn(pred, gt) == pytest.approx(area / 1000, rel=REL)


@pytest.mark.parametrize(
    ("value", "per_pixel"),
    [
        # Leaves at t = 0.6, l = 0.5: d_pred = 0 -> 1, d_gt = 0.5 -> 0.5.
        (0.5, 0.5),
        # Leaves at t = 1.0, l = 0.9: d_gt = 0.1 < 0.15, so both phi are 1.
        (0.9, 0.0),
    ],
)
def test_partial_hole_conn(value: float, per_pixel: float) -> None:
    h, w = 10, 12
    gt = np.ones((h, w))
    pred = np.ones((h, w))
    pred[3:5, 4:7] = value
    area = 6
    assert sad(pred, gt) == pytest.approx((1 - value) * area / 1000, rel=1e-9)
    assert conn(pred, gt) == pytest.approx(per_pixel * area / 1000, rel=1e-9, abs=1e-15)


def test_conn_keeps_largest_component() -> None:
    h, w = 5, 8
    gt = np.ones((h, w))
    pred = np.ones((h, w))
    pred[:, 2] = 0.45  # splits cols 0-1 from cols 3-7 once t > 0.45
    pred[:, 3:] = 0.9
    # t = 0.5: components {cols 0-1} (10 px) and {cols 3-7} (25 px); the larger stays.
    #   col 2 and cols 0-1 get l = 0.4.
    #   col 2: d_pred = 0.05 -> phi 1, d_gt = 0.6 -> phi 0.4: 0.6 per pixel.
    #   cols 0-1: pred = gt = 1, both phi 0.4: 0.
    # t = 1.0: cols 3-7 (pred 0.9) leave with l = 0.9: d_gt = 0.1 < 0.15, both phi 1: 0.
    assert conn(pred, gt) == pytest.approx(0.6 * h / 1000, rel=1e-9)


def test_conn_uses_4_connectivity() -> None:
    gt = np.ones((4, 4))
    pred = np.ones((4, 4))
    pred[np.add.outer(np.arange(4), np.arange(4)) == 3] = 0.0  # anti-diagonal of zeros
    lower_right = np.add.outer(np.arange(4), np.arange(4)) > 3
    pred[lower_right] = 0.9
    # 4-connected, the two 6-pixel triangles are apart; the tie goes to the upper-left one
    # (first in column-major order), so the lower-right leaves at t = 0.1 with l = 0:
    # 0.1 per pixel there, plus 1 per anti-diagonal zero (d_gt = 1 -> phi 0).
    # 8-connectivity would join them and give 4 / 1000.
    assert conn(pred, gt) == pytest.approx((6 * 0.1 + 4) / 1000, rel=1e-9)


def test_conn_tie_goes_to_first_component_in_column_major_order() -> None:
    gt = np.zeros((4, 4))
    pred = np.zeros((4, 4))
    gt[0:2, 2:4] = 1.0  # A: top right, first in row-major order
    pred[0:2, 2:4] = 0.9
    gt[2:4, 0:2] = 1.0  # B: bottom left, first in column-major order (MATLAB's bwconncomp)
    pred[2:4, 0:2] = 1.0
    # Equal sizes at t = 0.1 .. 0.9; B is kept, so A leaves at t = 0.1 with l = 0:
    # d_pred = 0.9, d_gt = 1 -> |0.1 - 0| per pixel. Keeping A instead would give 0.
    assert conn(pred, gt) == pytest.approx(4 * 0.1 / 1000, rel=1e-9)


# --- identical inputs ----------------------------------------------------------------------------


def test_identical_inputs_give_exact_zero() -> None:
    rng = np.random.default_rng(1)
    gt = rng.random((40, 50))
    trimap = _trimap_band(40, 50, 10, 30)
    for t in (None, trimap):
        result = evaluate(gt.copy(), gt, t)
        assert result == {"sad": 0.0, "mse": 0.0, "grad": 0.0, "conn": 0.0}


def test_evaluate_matches_single_metrics() -> None:
    rng = np.random.default_rng(2)
    gt = rng.random((30, 40))
    pred = np.clip(gt + 0.1 * rng.standard_normal(gt.shape), 0, 1)
    trimap = _trimap_band(30, 40, 5, 25)
    result = evaluate(pred, gt, trimap)
    assert set(result) == {"sad", "mse", "grad", "conn"}
    assert result["sad"] == sad(pred, gt, trimap)
    assert result["mse"] == mse(pred, gt, trimap)
    assert result["grad"] == grad(pred, gt, trimap)
    assert result["conn"] == conn(pred, gt, trimap)
    assert all(isinstance(v, float) for v in result.values())


def test_float32_inputs_accepted() -> None:
    gt = np.full((4, 4), 0.25, dtype=np.float32)
    assert sad(gt + np.float32(0.5), gt) == pytest.approx(0.5 * 16 / 1000, rel=REL)


# --- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gt", "trimap", "match"),
    [
        (np.zeros((4, 5)), np.zeros((5, 4)), None, "shapes differ"),
        (np.zeros((4, 5, 1)), np.zeros((4, 5, 1)), None, "2-D"),
        (np.zeros(5), np.zeros(5), None, "2-D"),
        (np.zeros((0, 5)), np.zeros((0, 5)), None, "empty"),
        (np.zeros((4, 5)), np.zeros((4, 5)), np.zeros((5, 4), dtype=np.uint8), "trimap shape"),
        (np.full((4, 5), 1.5), np.zeros((4, 5)), None, "outside"),
        (np.zeros((4, 5)), np.full((4, 5), -0.1), None, "outside"),
        (np.full((4, 5), np.nan), np.zeros((4, 5)), None, "NaN"),
        (np.zeros((4, 5), dtype=np.uint8), np.zeros((4, 5)), None, "floating-point"),
    ],
)
def test_bad_inputs_raise(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray | None, match: str) -> None:
    for fn in (sad, mse, grad, conn, evaluate):
        with pytest.raises(ValueError, match=match):
            fn(pred, gt, trimap)


# --- aggregate -----------------------------------------------------------------------------------


def _record(name: str, multi: bool, value: float) -> dict[str, Any]:
    return {
        "name": name,
        "multi_object": multi,
        "sad": value,
        "mse": value / 10,
        "grad": 2 * value,
        "conn": 3 * value,
    }


def test_aggregate_splits_single_and_multi() -> None:
    records = [
        _record("a", False, 1.0),
        _record("b", False, 3.0),
        _record("c", True, 10.0),
        _record("d", False, 5.0),
        _record("e", True, 20.0),
    ]
    out = aggregate(records)
    assert out["all"] == pytest.approx({"count": 5, "sad": 7.8, "mse": 0.78, "grad": 15.6, "conn": 23.4})
    assert out["single"] == pytest.approx({"count": 3, "sad": 3.0, "mse": 0.3, "grad": 6.0, "conn": 9.0})
    assert out["multi"] == pytest.approx({"count": 2, "sad": 15.0, "mse": 1.5, "grad": 30.0, "conn": 45.0})


def test_aggregate_empty_group_reports_none() -> None:
    out = aggregate([_record("a", False, 2.0)])
    assert out["multi"] == {"count": 0, "sad": None, "mse": None, "grad": None, "conn": None}
    assert out["single"]["count"] == 1
    assert out["all"]["sad"] == 2.0
    assert aggregate([])["all"] == {"count": 0, "sad": None, "mse": None, "grad": None, "conn": None}


def test_aggregate_rejects_incomplete_record() -> None:
    with pytest.raises(ValueError, match="lacks keys"):
        aggregate([{"name": "a", "multi_object": False, "sad": 1.0}])
