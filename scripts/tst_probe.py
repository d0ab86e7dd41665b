"""What TST's attention does in trained SPGMs: how peaked its rows are, and what the matte loses without it.

    .venv/bin/python scripts/tst_probe.py --data runs/ref/data --spd runs/ref/spd/best.pt \\
        --spgm runs/ref/spgm/best.pt [--spgm runs/abl/spg-im/seed-0/best.pt ...] --limit 80 --json out.json

Per SPGM checkpoint (with TST) and per TST stage (named by M, the number of SPD positions it attends over):
the rows' entropy divided by log M (1: uniform, 0: one position), the peak probability times M (1: uniform),
and the spread of the retrieved values over SPGM's positions against the spread of SPD's values. Then the
test split's whole-image SAD/1000 (all images) four ways: as trained; with every attention row replaced by
the uniform one (each position retrieves the mean of SPD's values: a global context vector, no location);
with the retrieval zeroed; and with SPD's feature average-pooled by ``--kv-stride`` before the keys and
values (``tst_kv_stride``, applied to the trained weights without retraining: the attention's cost divided
by the stride squared). Uniform close to trained means the position-specific retrieval is unused. The mean
absolute alpha difference from the trained model is reported for each replacement too.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spgim.train import metrics
from spgim.train.checkpoint import load_checkpoint, load_model
from spgim.train.data.matting import MattingTestDataset
from spgim.train.evaluate import predict_alpha
from spgim.train.models.attention import attention_impl
from spgim.train.models.spgm import TST


class RowStatistics:
    """The attention computed in full, its rows measured per stage (keyed by M) on the way."""

    def __init__(self) -> None:
        self.sums: dict[int, list[float]] = {}

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        rows = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * scale, dim=-1)
        positions = rows.shape[-1]
        retrieved = rows @ v
        entropy = -(rows * torch.log(rows.clamp_min(1e-12))).sum(-1).mean().item() / math.log(positions)
        peak = rows.max(-1).values.mean().item() * positions
        spread = (retrieved.std(1).mean() / v.std(1).mean().clamp_min(1e-12)).item()
        totals = self.sums.setdefault(positions, [0.0, 0.0, 0.0, 0.0])
        for index, value in enumerate((1.0, entropy, peak, spread)):
            totals[index] += value
        return retrieved

    def means(self) -> dict[str, dict[str, float]]:
        return {
            str(m): {"entropy_over_log_m": e / n, "peak_times_m": p / n, "retrieved_spread": s / n}
            for m, (n, e, p, s) in sorted(self.sums.items(), reverse=True)
        }


def uniform_rows(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Every position retrieves the mean of SPD's values."""
    return v.mean(1, keepdim=True).expand(q.shape[0], q.shape[1], v.shape[2])


def no_retrieval(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    return v.new_zeros(q.shape[0], q.shape[1], v.shape[2])


@contextmanager
def pooled_keys(model: torch.nn.Module, stride: int) -> Iterator[None]:
    """Temporarily pool SPD's feature by ``stride`` before every TST block's keys and values."""
    blocks = [m for m in model.modules() if isinstance(m, TST)]
    previous = [block.kv_stride for block in blocks]
    for block in blocks:
        block.kv_stride = stride
    try:
        yield
    finally:
        for block, old in zip(blocks, previous, strict=True):
            block.kv_stride = old


def whole_image_sad(alphas: list[Tensor], items: list[dict[str, Any]]) -> float:
    """Mean whole-image SAD/1000 of the predicted alphas against the items' true ones, averaged over all images
    as :func:`spgim.train.evaluate.evaluate_split` averages it."""
    pairs = zip(alphas, items, strict=True)
    sads = [metrics.sad(a[0, 0].double().numpy(), item["alpha"][0].double().numpy()) for a, item in pairs]
    return math.fsum(sads) / len(sads)


def mean_difference(first: list[Tensor], second: list[Tensor]) -> float:
    """Mean absolute alpha difference over every pixel of every image."""
    total = sum(float((a - b).abs().sum()) for a, b in zip(first, second, strict=True))
    return total / sum(a.numel() for a in first)


def probe(spd_path: Path, spgm_path: Path, data: Path, limit: int, kv_stride: int = 2) -> dict[str, Any]:
    """Row statistics and SAD as trained, with uniform rows, with no retrieval and with pooled keys, for one SPGM
    checkpoint."""
    payload = load_checkpoint(spgm_path, branch="spgm")
    if not payload["config"]["spgm"]["use_tst"]:
        return {"spgm": str(spgm_path), "skipped": "this SPGM has no TST"}
    spd = load_model(spd_path, "spd", payload["config"]).eval()
    spgm = load_model(spgm_path, "spgm").eval()
    dataset = MattingTestDataset(data)
    items = [dataset[i] for i in range(min(limit, len(dataset)))]  # read once, predicted in every mode
    statistics = RowStatistics()
    modes: dict[str, tuple[Callable[[Tensor, Tensor, Tensor, float], Tensor] | str, int]] = {
        "trained": (statistics, 0),
        "uniform": (uniform_rows, 0),
        "zeroed": (no_retrieval, 0),
        f"keys pooled {kv_stride}x": ("fused", kv_stride),
    }
    sad, alphas = {}, {}
    for name, (attention, stride) in modes.items():
        pooling = pooled_keys(spgm, stride) if stride else nullcontext()
        with attention_impl(spgm, attention), pooling, torch.no_grad():
            alphas[name] = [predict_alpha(spd, spgm, item["image"][None]) for item in items]
        sad[name] = whole_image_sad(alphas[name], items)
    moved = {name: mean_difference(alphas["trained"], alpha) for name, alpha in alphas.items() if name != "trained"}
    return {"spgm": str(spgm_path), "sad_whole_all": sad, "alpha_moved": moved, "stages": statistics.means()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with a test split")
    parser.add_argument("--spd", type=Path, required=True, help="the SPD the SPGMs were trained with")
    parser.add_argument("--spgm", type=Path, action="append", required=True, help="SPGM checkpoint (repeatable)")
    parser.add_argument("--limit", type=int, default=80, help="test images (default 80)")
    parser.add_argument("--kv-stride", type=int, default=2, help="key pooling factor of the pooled arm (default 2)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.kv_stride < 2:
        parser.error(f"--kv-stride {args.kv_stride}: give a pooling factor of 2 or more")
    rows = []
    for path in args.spgm:
        row = probe(args.spd, path, args.data, args.limit, args.kv_stride)
        rows.append(row)
        if "skipped" in row:
            print(f"{path}: {row['skipped']}")
            continue
        sad = row["sad_whole_all"]
        moved = row["alpha_moved"]
        print(
            f"{path}: SAD trained {sad['trained']:.3f}; "
            + ", ".join(f"{name} {sad[name]:.3f} (alpha moved {moved[name]:.1e})" for name in moved)
        )
        for m, stage in row["stages"].items():
            print(
                f"  M={m}: entropy/log M {stage['entropy_over_log_m']:.3f}, peak x M {stage['peak_times_m']:.1f}, "
                f"retrieved spread {stage['retrieved_spread']:.3f}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
