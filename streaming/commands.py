"""``spgim matte``: the command-line face of :func:`spgim.streaming.job.matte_video`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .options import EncodeOptions, EngineOptions, MattingOptions, Outputs, PreviewOptions, SourceOptions

EXAMPLE = """example:
  spgim matte clip.mp4 --model exported --output composite.mp4 --foreground subject.mov
  spgim matte clip.mp4 --model exported --output out.mp4 --background beach.jpg --alpha alpha.mp4
  spgim matte rtsp://camera.local/stream --model exported --output live.mp4 --duration 60
  spgim matte 0 --model exported --output webcam.mp4 --preview 8080   # then open http://127.0.0.1:8080/
  spgim matte rtsp://camera.local/stream --model exported --output rtmp://server/live/key --output record.mp4
  spgim matte clip.mp4 --server 127.0.0.1:8001 --output composite.mp4"""


def _run(args: argparse.Namespace) -> int:
    # Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning on the
    # cores the decoder and encoder threads need (as ONNX Runtime's spinning is turned off).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .job import matte_video

    result = matte_video(
        args.input,
        Outputs.from_args(args),
        model=args.model,
        engine=EngineOptions.from_args(args),
        matting=MattingOptions.from_args(args),
        reading=SourceOptions.from_args(args),
        encoding=EncodeOptions.from_args(args),
        preview=PreviewOptions.from_args(args),
        progress=not args.quiet,
    )
    for note in result.notes:
        print(f"spgim matte: note: {note}", file=sys.stderr)
    status = "interrupted; outputs finalised" if result.interrupted else "done"
    print(f"spgim matte: {status}: {result.summary_line()}", file=sys.stderr)
    return 130 if result.interrupted else 0


def register(subparsers: Any) -> None:
    """Add ``matte`` to the ``spgim`` command."""
    parser = subparsers.add_parser(
        "matte",
        help="matte a video file, image sequence, network stream or webcam",
        description=(
            "Decode, matte, composite and encode in overlapping threads. Keeps the input's frame timestamps, "
            "rotation, size and audio (remuxed when the output container takes it, else re-encoded)."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input",
        help="media file, image folder or pattern (frames/%%05d.png), rtsp/rtmp/http(s)/udp/tcp URL, or webcam index",
    )
    parser.add_argument("--model", help="spgim export folder (required unless --server is given)")
    for group in (Outputs, EngineOptions, MattingOptions, EncodeOptions, PreviewOptions, SourceOptions):
        group.add_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run)
