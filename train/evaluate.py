"""Alpha prediction over a composition test split and its SAD / MSE / Grad / Conn metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import metrics
from .data.matting import MattingTestDataset, crop_to, pad_to_multiple


@torch.no_grad()
def predict_alpha(spd: nn.Module, spgm: nn.Module, image: Tensor) -> Tensor:
    """Full-resolution alpha ``(B, 1, H, W)`` of RGB images ``(B, 3, H, W)`` in [0, 1] of any size.

    The image is padded to a multiple of 32 and the prediction cropped back.
    """
    padded, size = pad_to_multiple(image, 32)
    mask, r2, r3, r4 = spd(padded)
    alpha = spgm(padded, mask, r2, r3, r4)
    if isinstance(alpha, tuple):  # a recurrent SPGM: (alpha, *state), each image the first frame of a stream
        alpha = alpha[0]
    assert isinstance(alpha, Tensor), "SPGM must be in eval mode"
    return crop_to(alpha, size)


def evaluate_split(
    spd: nn.Module,
    spgm: nn.Module,
    data: str | Path,
    *,
    device: torch.device | str = "cpu",
    limit: int | None = None,
) -> dict[str, Any]:
    """Predict every test image of ``data`` and measure it.

    Returns: ``{"whole_image": aggregate, "unknown_region": aggregate or None, "images": [...]}``
    where an aggregate splits means into all / single-object / multi-object images (paper Table 4)
    and ``unknown_region`` is present when the dataset has trimaps.
    """
    dataset = MattingTestDataset(data)
    spd, spgm = spd.eval().to(device), spgm.eval().to(device)
    whole: list[dict[str, Any]] = []
    unknown: list[dict[str, Any]] = []
    count = len(dataset) if limit is None else min(limit, len(dataset))
    for index in range(count):
        item = dataset[index]
        pred = predict_alpha(spd, spgm, item["image"][None].to(device))[0, 0].double().cpu().numpy()
        gt = item["alpha"][0].double().numpy()
        base = {"name": item["name"], "multi_object": bool(item["multi_object"])}
        whole.append({**base, **metrics.evaluate(pred, gt)})
        if item["trimap"] is not None:
            unknown.append({**base, **metrics.evaluate(pred, gt, item["trimap"][0].numpy())})
    return {
        "whole_image": metrics.aggregate(whole),
        "unknown_region": metrics.aggregate(unknown) if unknown else None,
        "images": whole,
    }


def validation_sad(spd: nn.Module, spgm: nn.Module, dataset: MattingTestDataset, device: torch.device) -> float:
    """Mean whole-image SAD (divided by 1000) over a test split: SPGM's validation score."""
    total = 0.0
    for index in range(len(dataset)):
        item = dataset[index]
        pred = predict_alpha(spd, spgm, item["image"][None].to(device))[0, 0].double().cpu().numpy()
        total += metrics.sad(pred, item["alpha"][0].double().numpy())
    return total / max(1, len(dataset))
