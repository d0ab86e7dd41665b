"""``spgim`` subcommands of the training stage. Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXAMPLES = {
    "summary": ("example:\n  spgim summary --config paper --size 512x512\n  spgim summary --config tiny --json"),
    "clip": (
        "example:\n  spgim data clip --out demo.mp4 --frames 48 --size 320x192 --fps 24 --seed 0\n"
        "  spgim data clip --out clip.mp4 --alpha clip-alpha.mkv --fps 30000/1001\n\n"
        "writes FILE as H.264 (yuv420p) + AAC MP4; --alpha writes the true alpha as lossless FFV1 .mkv;\n"
        "the same arguments give the same frames."
    ),
}


def _summary(args: argparse.Namespace) -> int:
    from spgim.sizes import parse_size

    from .config import get_config
    from .summary import format_summary, model_summary

    height, width = parse_size(args.size)
    summary = model_summary(get_config(args.config, variant=args.variant), height, width)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def _clip(args: argparse.Namespace) -> int:
    from fractions import Fraction

    from spgim.option_groups import WHOLE, ValueType
    from spgim.sizes import parse_size

    from .data.clips import render_clip

    height, width = parse_size(args.size, multiple=1)
    size = (width, height)
    fps = ValueType(Fraction, "a frame rate such as 24 or 30000/1001").read("--fps", args.fps)
    frames = WHOLE.read("--frames", args.frames)
    seed = WHOLE.read("--seed", args.seed)
    info = render_clip(args.out, frames=frames, size=size, fps=fps, seed=seed, alpha_path=args.alpha)
    alpha = f", alpha in {info.alpha_path}" if info.alpha_path else ""
    print(
        f"wrote {info.frames} frames of {size[0]}x{size[1]} at {info.fps} fps ({info.duration:.2f} s) to {info.path}: "
        f"{', '.join(info.objects)} over the {info.photo} photo, with AAC audio{alpha}"
    )
    return 0


def _register_clip(actions: Any) -> None:
    clip = actions.add_parser(
        "clip",
        help="render a short demo video: objects moving over a photo, with audio",
        description="Render a short H.264 + AAC clip of 1-3 objects moving, turning and scaling over a panning "
        "photo, with a synthesised melody; optionally the ground-truth alpha of every frame.",
        epilog=EXAMPLES["clip"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    clip.add_argument("--out", required=True, metavar="FILE", help="output .mp4")
    clip.add_argument("--frames", default="48", metavar="N", help="number of frames (default 48)")
    clip.add_argument("--size", default="320x192", metavar="WxH", help="frame size, even sides (default 320x192)")
    clip.add_argument("--fps", default="24", metavar="F", help="frame rate, e.g. 24 or 30000/1001 (default 24)")
    clip.add_argument("--seed", default="0", metavar="K", help="random seed, a whole number >= 0 (default 0)")
    clip.add_argument("--alpha", default=None, metavar="FILE", help="also write the true alpha to this .mkv")
    clip.set_defaults(handler=_clip)


def register(subparsers: Any) -> None:
    """Add ``data``, ``train`` and ``summary`` to the ``spgim`` command (``eval`` is :mod:`spgim.eval_command`'s)."""
    from . import train_command

    formatter = argparse.RawDescriptionHelpFormatter
    data = subparsers.add_parser(
        "data",
        help="make training data: the procedural scene generator",
        description="Dataset tools. `synth` writes procedural multi-object scenes in the real datasets' layouts; "
        "`clip` renders a short demo video with its true alpha.",
        epilog="example:\n  spgim data synth --out data --count 500 --size 256 --seed 0\n"
        "  spgim data clip --out demo.mp4 --frames 48 --size 320x192",
        formatter_class=formatter,
    )
    from .data.synth_cli import register_synth

    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    register_synth(actions)
    _register_clip(actions)

    train = subparsers.add_parser(
        "train",
        help="train the caption, spd or spgm stage",
        description="Train one SPG-IM stage: caption pre-training, SPD saliency, SPGM alpha (torchrun-ready).",
        epilog=train_command.TRAIN_EXAMPLE,
        formatter_class=formatter,
    )
    train_command.add_train_arguments(train)
    train.set_defaults(handler=train_command.run_train)

    summary = subparsers.add_parser(
        "summary",
        help="parameters and FLOPs per branch",
        description="Parameters and forward FLOPs per frame of SPD, SPGM and both.",
        epilog=EXAMPLES["summary"],
        formatter_class=formatter,
    )
    summary.add_argument("--config", default="paper", help="model configuration: paper, tiny or live (default paper)")
    summary.add_argument("--size", default="512x512", help="input size WxH, multiples of 32 (default 512x512)")
    summary.add_argument("--variant", default=None, help="ablation variant: basic, basic+aft, spg-im-wo-aft, spg-im")
    summary.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    summary.set_defaults(handler=_summary)
