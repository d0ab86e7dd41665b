"""``spgim`` subcommands of the training stage. Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

EXAMPLES = {
    "summary": ("example:\n  spgim summary --config paper --size 512x512\n  spgim summary --config tiny --json"),
    "clip": (
        "example:\n  spgim data clip --out demo.mp4 --frames 48 --size 320x192 --fps 24 --seed 0\n"
        "  spgim data clip --out clip.mp4 --alpha clip-alpha.mkv --fps 30000/1001\n\n"
        "writes FILE as H.264 (yuv420p) + AAC MP4; --alpha writes the true alpha as lossless FFV1 .mkv;\n"
        "the same arguments give the same frames."
    ),
    "eval_video": (
        "  spgim eval --video clip.mp4 --truth clip-alpha.mkv --model exported --json scores.json\n"
        "  spgim eval --truth clip-alpha.mkv --prediction matted-alpha.mkv"
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


def _option(option: str, text: str, convert: Callable[[str], T], expected: str) -> T:
    from spgim.errors import SpgimError

    try:
        return convert(text)
    except (ValueError, ZeroDivisionError):
        raise SpgimError(f"{option} must be {expected}, got {text!r}") from None


def _clip(args: argparse.Namespace) -> int:
    from fractions import Fraction

    from spgim.sizes import parse_size

    from .data.clips import render_clip

    height, width = parse_size(args.size, multiple=1)
    size = (width, height)
    fps = _option("--fps", args.fps, Fraction, "a frame rate such as 24 or 30000/1001")
    frames = _option("--frames", args.frames, int, "a whole number")
    seed = _option("--seed", args.seed, int, "a whole number")
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


_CHECKPOINT_FLAGS = {"spd": "--spd", "spgm": "--spgm", "data": "--data"}


def _add_video_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--video`` mode of ``spgim eval``; which flags each mode needs is checked in :func:`_eval`."""
    video = parser.add_argument_group("video evaluation (instead of --spd/--spgm/--data)")
    video.add_argument("--video", type=Path, metavar="CLIP", help="the clip to matte with --model")
    video.add_argument(
        "--truth", type=Path, metavar="ALPHA", help="its true alpha: a video (e.g. FFV1 .mkv) or PNG folder"
    )
    video.add_argument("--model", type=Path, metavar="DIR", help="an `spgim export` folder to matte CLIP with")
    video.add_argument(
        "--prediction", type=Path, metavar="ALPHA", help="instead of --model: an existing predicted alpha to score"
    )
    video.add_argument("--json", type=Path, metavar="OUT", help="write the per-frame and mean scores here")
    video.add_argument("--backend", default="auto", help="runtime backend for --model (default auto)")
    video.add_argument("--work-size", metavar="N", help="working size for --model (default: the export's)")
    video.add_argument(
        "--keyframe-interval", metavar="K", help="SPD every K frames for --model (default: the export's)"
    )
    video.add_argument("--smoothing", metavar="S", help="temporal smoothing for --model, as spgim matte's")
    video.add_argument("--keyframe-ramp", metavar="R", help="keyframe ramp for --model, as spgim matte's")
    video.add_argument(
        "--upsample",
        default="auto",
        choices=("auto", "guided", "guided-cv2", "bilinear"),
        help="alpha to full size for --model, as spgim matte's (default auto)",
    )


def _eval(args: argparse.Namespace) -> int:
    """Handler of ``spgim eval``: checkpoints on a dataset, or an alpha video against its truth."""
    from spgim.errors import SpgimError

    from . import train_command

    video_mode = any(getattr(args, name) is not None for name in ("video", "truth", "model", "prediction"))
    if not video_mode:
        missing = [flag for dest, flag in _CHECKPOINT_FLAGS.items() if getattr(args, dest) is None]
        if missing:
            raise SpgimError(f"give {', '.join(missing)} (checkpoint evaluation), or --video and --truth")
        return train_command.run_eval(args)
    mixed = [flag for dest, flag in _CHECKPOINT_FLAGS.items() if getattr(args, dest) is not None]
    if mixed:
        raise SpgimError(f"{', '.join(mixed)} belong to checkpoint evaluation; video evaluation takes --video/--truth")
    return _eval_video(args)


def _eval_video(args: argparse.Namespace) -> int:
    import sys
    import tempfile

    from spgim.errors import SpgimError

    from .video_metrics import evaluate_alpha_videos

    if args.truth is None:
        raise SpgimError("give the true alpha with --truth")
    if (args.model is None) == (args.prediction is None):
        raise SpgimError("give one of --model (matte --video with it) or --prediction (an existing alpha)")
    if args.prediction is not None:
        scores = evaluate_alpha_videos(args.prediction, args.truth)
    else:
        if args.video is None:
            raise SpgimError("give the clip to matte with --video")
        work_size = None if args.work_size is None else _option("--work-size", args.work_size, int, "a number")
        interval = (
            None
            if args.keyframe_interval is None
            else _option("--keyframe-interval", args.keyframe_interval, int, "a whole number of frames")
        )
        smoothing = None if args.smoothing is None else _option("--smoothing", args.smoothing, float, "a number")
        ramp = (
            None
            if args.keyframe_ramp is None
            else _option("--keyframe-ramp", args.keyframe_ramp, int, "a whole number of frames")
        )
        # The one place train reaches up to streaming: scoring a model on a clip means matting it exactly as
        # `spgim matte` does. Imported here so that `spgim --help` and training never load the runtime.
        from spgim.streaming.job import matte_video

        def log(message: str) -> None:
            print(f"spgim eval: {message}", file=sys.stderr, flush=True)

        with tempfile.TemporaryDirectory(prefix="spgim-eval-") as folder:
            # A PNG folder: lossless, so the score is the model's and not the encoder's.
            predicted = Path(folder) / "alpha"
            matte_video(
                args.video,
                model=args.model,
                alpha=predicted,
                backend=args.backend,
                work_size=work_size,
                keyframe_interval=interval,
                smoothing=smoothing,
                keyframe_ramp=ramp,
                upsampling=args.upsample,
                progress=False,
                log=log,
            )
            scores = evaluate_alpha_videos(predicted, args.truth)
    print(scores.summary_line())
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(scores.to_json(), indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add ``data``, ``train``, ``eval`` and ``summary`` to the ``spgim`` command."""
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

    evaluate = subparsers.add_parser(
        "eval",
        help="SAD, MSE, Grad and Conn of an SPD + SPGM pair on a test split, or of a matted video",
        description="Evaluate SPD + SPGM on DATA/test (whole image; unknown region too when trimaps exist), "
        "or, with --video/--truth, an exported model's (or an existing) alpha video against the true alpha.",
        epilog=f"{train_command.EVAL_EXAMPLE}\n{EXAMPLES['eval_video']}",
        formatter_class=formatter,
    )
    train_command.add_eval_arguments(evaluate)
    _add_video_eval_arguments(evaluate)
    evaluate.set_defaults(handler=_eval)

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
