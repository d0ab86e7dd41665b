"""``spgim eval``: checkpoints on a dataset's test split (the training stage), or an alpha video against its truth.

It sits in the command layer, above the stages, because ``--video`` with ``--model`` mattes the clip exactly as
``spgim matte`` does (:func:`spgim.streaming.job.matte_video`, the same :mod:`spgim.streaming.options`) and then
scores it with the training stage's video metrics; the training stage itself never imports streaming.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError

EXAMPLE = """  spgim eval --video clip.mp4 --truth clip-alpha.mkv --model exported --json scores.json
  spgim eval --truth clip-alpha.mkv --prediction matted-alpha.mkv"""

_CHECKPOINT_FLAGS = {"spd": "--spd", "spgm": "--spgm", "data": "--data"}


def _add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--video`` mode; which flags each mode needs is checked in :func:`_eval`."""
    from spgim.streaming.options import LOCAL_ENGINE, EngineOptions, MattingOptions

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
    matting = parser.add_argument_group("matting CLIP with --model, as spgim matte does")
    EngineOptions.add_arguments(matting, only=LOCAL_ENGINE)
    MattingOptions.add_arguments(matting)


def _eval(args: argparse.Namespace) -> int:
    """Handler of ``spgim eval``: checkpoints on a dataset, or an alpha video against its truth."""
    from spgim.train import train_command

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
    from spgim.streaming.options import EngineOptions, MattingOptions, Outputs
    from spgim.train.video_metrics import evaluate_alpha_videos

    if args.truth is None:
        raise SpgimError("give the true alpha with --truth")
    if (args.model is None) == (args.prediction is None):
        raise SpgimError("give one of --model (matte --video with it) or --prediction (an existing alpha)")
    if args.prediction is not None:
        scores = evaluate_alpha_videos(args.prediction, args.truth)
    else:
        if args.video is None:
            raise SpgimError("give the clip to matte with --video")
        engine, matting = EngineOptions.from_args(args), MattingOptions.from_args(args)
        # Imported here so that `spgim --help` and checkpoint evaluation never load the runtime.
        from spgim.streaming.job import matte_video

        def log(message: str) -> None:
            print(f"spgim eval: {message}", file=sys.stderr, flush=True)

        with tempfile.TemporaryDirectory(prefix="spgim-eval-") as folder:
            # A PNG folder: lossless, so the score is the model's and not the encoder's.
            predicted = Path(folder) / "alpha"
            matte_video(
                args.video,
                Outputs(alpha=predicted),
                model=args.model,
                engine=engine,
                matting=matting,
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
    """Add ``eval`` to the ``spgim`` command."""
    from spgim.train import train_command

    evaluate = subparsers.add_parser(
        "eval",
        help="SAD, MSE, Grad and Conn of an SPD + SPGM pair on a test split, or of a matted video",
        description="Evaluate SPD + SPGM on DATA/test (whole image; unknown region too when trimaps exist), "
        "or, with --video/--truth, an exported model's (or an existing) alpha video against the true alpha.",
        epilog=f"{train_command.EVAL_EXAMPLE}\n{EXAMPLE}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train_command.add_eval_arguments(evaluate)
    _add_video_arguments(evaluate)
    evaluate.set_defaults(handler=_eval)
