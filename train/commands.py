"""``spgim`` subcommands of the training stage. Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXAMPLES = {
    "summary": ("example:\n  spgim summary --config paper --size 512x512\n  spgim summary --config tiny --json"),
}


def _summary(args: argparse.Namespace) -> int:
    from .config import get_config, parse_size
    from .summary import format_summary, model_summary

    height, width = parse_size(args.size)
    summary = model_summary(get_config(args.config, variant=args.variant), height, width)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def register(subparsers: Any) -> None:
    """Add ``data``, ``train``, ``eval`` and ``summary`` to the ``spgim`` command."""
    from . import train_command

    formatter = argparse.RawDescriptionHelpFormatter
    data = subparsers.add_parser(
        "data",
        help="make training data: the procedural scene generator",
        description="Dataset tools. `synth` writes procedural multi-object scenes in the real datasets' layouts.",
        epilog="example:\n  spgim data synth --out data --count 500 --size 256 --seed 0",
        formatter_class=formatter,
    )
    from .data.synth_cli import register_synth

    register_synth(data.add_subparsers(dest="action", metavar="ACTION", required=True))

    train = subparsers.add_parser(
        "train",
        help="train the caption, spd or spgm stage",
        description="Train one SPG-IM stage: caption pre-training, SPD saliency, SPGM alpha (torchrun-ready).",
        epilog=train_command.TRAIN_EXAMPLE,
        formatter_class=formatter,
    )
    train_command.add_train_arguments(train)
    train.set_defaults(handler=train_command.run_train)

    evaluate = subparsers.add_parser(
        "eval",
        help="SAD, MSE, Grad and Conn of an SPD + SPGM pair on a test split",
        description="Evaluate SPD + SPGM on DATA/test (whole image; unknown region too when trimaps exist).",
        epilog=train_command.EVAL_EXAMPLE,
        formatter_class=formatter,
    )
    train_command.add_eval_arguments(evaluate)
    evaluate.set_defaults(handler=train_command.run_eval)

    summary = subparsers.add_parser(
        "summary",
        help="parameters and FLOPs per branch",
        description="Parameters and forward FLOPs per frame of SPD, SPGM and both.",
        epilog=EXAMPLES["summary"],
        formatter_class=formatter,
    )
    summary.add_argument("--config", default="paper", help="model configuration: paper or tiny (default paper)")
    summary.add_argument("--size", default="512x512", help="input size WxH, multiples of 32 (default 512x512)")
    summary.add_argument("--variant", default=None, help="ablation variant: basic, basic+aft, spg-im-wo-aft, spg-im")
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    summary.set_defaults(handler=_summary)
