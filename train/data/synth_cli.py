"""``spgim data synth``: the procedural scene generator on the command line.

Nothing heavy is imported here; numpy, OpenCV and scikit-image load inside the handler.
"""

from __future__ import annotations

import argparse
from typing import Any

from spgim.errors import SpgimError

EXAMPLE = """example:
  spgim data synth --out data/synth --count 500 --size 256 --seed 0
  spgim data synth --out data/tiny --count 20 --size 128 --seed 1 --test-fraction 0.5 --single-fraction 0

writes DIR/train/{fg,alpha,bg}, DIR/test/{merged,alpha,trimaps,fg,bg}, DIR/scenes.json and
DIR/coco/{annotations,train2017,val2017} (see docs/data-layout.md); the same arguments give
byte-identical files."""


def register_synth(subparsers: Any) -> None:
    """Add the ``synth`` subcommand to the subparsers of the ``data`` command."""
    parser = subparsers.add_parser(
        "synth",
        help="generate multi-object matting scenes with captions",
        description=(
            "Generate scenes of 1-4 foreground objects (soft edges, hair-like strands, translucent "
            "parts, holes) with exact alpha over photo and procedural backgrounds, with captions, "
            "in the composition and COCO Captions layouts."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder, created if missing (must be empty)")
    parser.add_argument("--count", default="200", metavar="N", help="number of scenes, at least 1 (default 200)")
    parser.add_argument(
        "--size", default="256", metavar="S", help="side of the square scenes in pixels, >= 64 (default 256)"
    )
    parser.add_argument("--seed", default="0", metavar="K", help="random seed, a whole number >= 0 (default 0)")
    parser.add_argument(
        "--test-fraction",
        default="0.2",
        metavar="F",
        help="share of scenes in the test/val split (default 0.2)",
    )
    parser.add_argument(
        "--single-fraction", default="0.3", metavar="F", help="share of single-object scenes (default 0.3)"
    )
    parser.add_argument("--workers", default=None, metavar="W", help="processes to use (default: up to 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace the generated data of a previous run in DIR")
    parser.set_defaults(handler=run_synth)


def _whole(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpgimError(f"{option} must be a whole number, got {text!r}") from None


def _fraction(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpgimError(f"{option} must be a number from 0 to 1, got {text!r}") from None


def run_synth(args: argparse.Namespace) -> int:
    """Handler of ``spgim data synth``: generate the dataset and print a one-line summary."""
    from .synth import generate_dataset

    summary = generate_dataset(
        args.out,
        count=_whole("--count", args.count),
        size=_whole("--size", args.size),
        seed=_whole("--seed", args.seed),
        test_fraction=_fraction("--test-fraction", args.test_fraction),
        single_fraction=_fraction("--single-fraction", args.single_fraction),
        workers=None if args.workers is None else _whole("--workers", args.workers),
        overwrite=args.overwrite,
    )
    print(
        f"wrote {summary['scenes']} scenes of {summary['size']}x{summary['size']} to {summary['out_dir']}: "
        f"{summary['train']} train, {summary['test']} test, {summary['single']} single-object, "
        f"{summary['multi']} multi-object; {summary['seconds']:.1f} s "
        f"({summary['scenes_per_minute']:.0f} scenes/min, {summary['workers']} workers)"
    )
    return 0
