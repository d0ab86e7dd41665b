"""Paper Table 4's ablation on our own data: the four SPGM variants, same SPD, data, seed and budget.

    .venv/bin/python scripts/ablation.py --data demo-output/data --spd demo-output/runs/spd/best.pt \\
        --out runs/ablation --epochs 6 --json runs/ablation/ablation.json

Each variant is trained with ``spgim train spgm --variant V`` and evaluated with ``spgim eval``;
the table prints whole-image SAD / MSE / Grad / Conn, single- vs multi-object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from spgim.cli import main as spgim
from spgim.train.config import VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--spd", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for variant in VARIANTS:
        run = args.out / variant
        started = time.perf_counter()
        code = spgim(
            [
                "train",
                "spgm",
                "--data",
                str(args.data),
                "--config",
                args.config,
                "--spd",
                str(args.spd),
                "--variant",
                variant,
                "--out",
                str(run),
                "--epochs",
                str(args.epochs),
                "--workers",
                str(args.workers),
            ]
        )
        if code != 0:
            raise SystemExit(code)
        seconds = time.perf_counter() - started
        metrics = run / "metrics.json"
        if (
            spgim(
                [
                    "eval",
                    "--spd",
                    str(args.spd),
                    "--spgm",
                    str(run / "best.pt"),
                    "--data",
                    str(args.data),
                    "--out",
                    str(metrics),
                ]
            )
            != 0
        ):
            raise SystemExit(1)
        results[variant] = {"train_seconds": seconds, **json.loads(metrics.read_text())["whole_image"]}
    print(f"\n{'variant':<16}{'SAD all':>9}{'SAD single':>12}{'SAD multi':>11}{'MSE':>8}{'Grad':>8}{'Conn':>8}")
    for variant, numbers in results.items():
        print(
            f"{variant:<16}{numbers['all']['sad']:>9.3f}{numbers['single']['sad']:>12.3f}"
            f"{numbers['multi']['sad']:>11.3f}{numbers['all']['mse']:>8.4f}{numbers['all']['grad']:>8.3f}"
            f"{numbers['all']['conn']:>8.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
