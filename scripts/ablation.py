"""Paper Table 4's ablation on our own data: the four SPGM variants, same SPD, data and budget, several seeds.

    .venv/bin/python scripts/ablation.py --data runs/reference-tiny/data --spd runs/reference-tiny/spd/best.pt \\
        --out runs/ablation --epochs 4 --max-steps-per-epoch 250 --seeds 0,1,2 --json runs/ablation/ablation.json

Each variant x seed is trained with ``spgim train spgm --variant V --seed N`` and evaluated with
``spgim eval`` on the test split; the table prints the mean and the spread (sample standard deviation
over the seeds) of SAD/1000 on the whole image and on the unknown region, single- vs multi-object.
A run whose ``metrics.json`` exists is reused, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from spgim.cli import main as spgim
from spgim.train.config import VARIANTS

REGIONS = ("whole_image", "unknown_region")
GROUPS = ("all", "single", "multi")


def _run(args: argparse.Namespace, variant: str, seed: int) -> dict[str, Any]:
    """Train and evaluate one variant with one seed; its ``spgim eval`` report (reused when present)."""
    run = args.out / variant / f"seed-{seed}"
    metrics = run / "metrics.json"
    if metrics.is_file():
        return dict(json.loads(metrics.read_text()))
    started = time.perf_counter()
    train = ["train", "spgm", "--data", str(args.data), "--config", args.config, "--spd", str(args.spd)]
    train += ["--variant", variant, "--out", str(run), "--epochs", str(args.epochs), "--seed", str(seed)]
    train += ["--workers", str(args.workers), "--crop", str(args.crop)]
    if args.max_steps_per_epoch:
        train += ["--max-steps-per-epoch", str(args.max_steps_per_epoch)]
    if args.milestones:
        train += ["--milestones", args.milestones]
    if spgim(train) != 0:
        raise SystemExit(f"training {variant} (seed {seed}) failed")
    seconds = time.perf_counter() - started
    evaluate = ["eval", "--spd", str(args.spd), "--spgm", str(run / "best.pt"), "--data", str(args.data)]
    if spgim([*evaluate, "--out", str(metrics)]) != 0:
        raise SystemExit(f"evaluating {variant} (seed {seed}) failed")
    report = dict(json.loads(metrics.read_text()))
    report["train_seconds"] = seconds
    metrics.write_text(json.dumps(report, indent=2))
    return report


def summarise(reports: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and spread (sample standard deviation; 0 for one seed) of SAD per region and group."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for region in REGIONS:
        table[region] = {}
        for group in GROUPS:
            values = [report[region][group]["sad"] for report in reports]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            table[region][group] = {"mean": statistics.fmean(values), "spread": spread}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--spd", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-steps-per-epoch", type=int, default=0, help="0: the whole epoch")
    parser.add_argument("--milestones", default="", help="step-decay epochs (default: the recipe's)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds (default 0)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all four)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    variants = args.variants.split(",")
    # Seed by seed, so that an ablation stopped early has every variant with the same seeds.
    reports: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
    for seed in seeds:
        for variant in variants:
            reports[variant].append(_run(args, variant, seed))
    results = {v: {"seeds": seeds, "sad": summarise(reports[v]), "runs": reports[v]} for v in variants}
    header = f"{'variant':<16}" + "".join(f"{f'{region[:7]} {group}':>20}" for region in REGIONS for group in GROUPS)
    print(f"\nSAD/1000, mean +- spread over seeds {seeds}\n{header}")
    for variant, result in results.items():
        cells = [result["sad"][region][group] for region in REGIONS for group in GROUPS]
        print(f"{variant:<16}" + "".join(f"{cell['mean']:>12.3f} +- {cell['spread']:<5.3f}" for cell in cells))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
