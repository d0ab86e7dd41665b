"""``spgim demo`` / ``make demo``: the main job on the embedded default, no GPU and no downloads.

It generates a small set with the project's scene generator, trains the tiny configuration's
three stages (caption -> SPD -> SPGM) for a bounded few minutes, and prints the evaluation
metrics. A second run reuses the data and checkpoints it finds in the output folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEMO_SCENES = 120
DEMO_SIZE = 128
DEMO_SEED = 0


def _stage(name: str, out: Path, argv: list[str]) -> Path:
    """Train one stage unless its best checkpoint is already there; returns that checkpoint."""
    from spgim.cli import main

    best = out / name / "best.pt"
    if best.is_file():
        print(f"demo: reusing {best}")
        return best
    started = time.perf_counter()
    code = main(["train", name, "--out", str(out / name), *argv])
    if code != 0:
        raise SystemExit(code)
    print(f"demo: trained {name} in {time.perf_counter() - started:.0f} s")
    return best


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``spgim demo``."""
    from spgim.train.config import get_config
    from spgim.train.data.synth import generate_dataset
    from spgim.train.summary import format_summary, model_summary

    out: Path = args.out
    config = get_config("paper")
    print(format_summary(model_summary(config, config["image_size"], config["image_size"])), end="\n\n")

    data = out / "data"
    if (data / "scenes.json").is_file():
        print(f"demo: reusing the generated scenes in {data}")
    else:
        summary = generate_dataset(data, count=args.scenes, size=DEMO_SIZE, seed=DEMO_SEED)
        print(f"demo: generated {summary['scenes']} scenes in {data} ({summary['scenes_per_minute']:.0f} scenes/min)")
    runs = out / "runs"
    common = ["--data", str(data), "--config", "tiny", "--workers", str(args.workers)]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    caption = _stage("caption", runs, common)
    spd = _stage("spd", runs, [*common, "--init", str(caption)])
    spgm = _stage("spgm", runs, [*common, "--spd", str(spd)])
    return _evaluate(spd, spgm, data, out / "metrics.json")


def _evaluate(spd: Path, spgm: Path, data: Path, out: Path) -> int:
    from spgim.cli import main

    print(f"demo: evaluating {spgm} on {data / 'test'}")
    return main(["eval", "--spd", str(spd), "--spgm", str(spgm), "--data", str(data), "--out", str(out)])


def register(subparsers: Any) -> None:
    """Add ``demo`` to the ``spgim`` command."""
    demo = subparsers.add_parser(
        "demo",
        help="the main job on the embedded default (what `make demo` runs)",
        description=__doc__,
        epilog="example:\n  spgim demo\n  spgim demo --out demo-output",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    demo.add_argument("--workers", type=int, default=1, help="DataLoader workers (default 1)")
    demo.add_argument("--scenes", type=int, default=DEMO_SCENES, help=f"scenes to generate (default {DEMO_SCENES})")
    demo.add_argument("--epochs", type=int, help="epochs of every stage (default: the tiny recipes')")
    demo.set_defaults(handler=run_demo)
