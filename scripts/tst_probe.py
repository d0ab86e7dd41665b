"""What TST's attention does in trained SPGMs: how peaked its rows are, and what the matte loses without it.

    .venv/bin/python scripts/tst_probe.py --data runs/ref/data --spd runs/ref/spd/best.pt \\
        --spgm runs/ref/spgm/best.pt [--spgm runs/abl/spg-im/seed-0/best.pt ...] --limit 80 --json out.json

Per SPGM checkpoint (with TST) and per TST stage (named by M, the number of SPD positions it attends over):
the rows' entropy divided by log M (1: uniform, 0: one position), the peak probability times M (1: uniform),
and the spread of the retrieved values over SPGM's positions against the spread of SPD's values. Then the
test split's whole-image SAD/1000 (all images) three ways: as trained; with every attention row replaced by
the uniform one (each position retrieves the mean of SPD's values: a global context vector, no location);
and with the retrieval zeroed. Uniform close to trained means the position-specific retrieval is unused.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from spgim.train.checkpoint import load_checkpoint, load_model
from spgim.train.evaluate import evaluate_split
from spgim.train.models.attention import attention_impl


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


def probe(spd_path: Path, spgm_path: Path, data: Path, limit: int) -> dict[str, Any]:
    """Row statistics and SAD as trained, with uniform rows and with no retrieval, for one SPGM checkpoint."""
    payload = load_checkpoint(spgm_path, branch="spgm")
    if not payload["config"]["spgm"]["use_tst"]:
        return {"spgm": str(spgm_path), "skipped": "this SPGM has no TST"}
    spd = load_model(spd_path, "spd", payload["config"])
    spgm = load_model(spgm_path, "spgm")
    statistics = RowStatistics()
    modes: dict[str, Callable[[Tensor, Tensor, Tensor, float], Tensor]] = {
        "trained": statistics,
        "uniform": uniform_rows,
        "zeroed": no_retrieval,
    }
    sad = {}
    for name, attention in modes.items():
        with attention_impl(spgm, attention), torch.no_grad():
            result = evaluate_split(spd, spgm, data, limit=limit)
        sad[name] = result["whole_image"]["all"]["sad"]
    return {"spgm": str(spgm_path), "sad_whole_all": sad, "stages": statistics.means()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with a test split")
    parser.add_argument("--spd", type=Path, required=True, help="the SPD the SPGMs were trained with")
    parser.add_argument("--spgm", type=Path, action="append", required=True, help="SPGM checkpoint (repeatable)")
    parser.add_argument("--limit", type=int, default=80, help="test images (default 80)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for path in args.spgm:
        row = probe(args.spd, path, args.data, args.limit)
        rows.append(row)
        if "skipped" in row:
            print(f"{path}: {row['skipped']}")
            continue
        sad = row["sad_whole_all"]
        print(
            f"{path}: SAD trained {sad['trained']:.3f}, uniform rows {sad['uniform']:.3f}, zeroed {sad['zeroed']:.3f}"
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
