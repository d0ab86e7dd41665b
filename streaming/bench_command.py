"""``spgim bench``: model-only rows from :mod:`spgim.runtime.bench`, end-to-end ones from :mod:`.bench`.

It lives in the streaming stage because ``--video`` runs the whole streaming pipeline.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spgim.option_groups import SECONDS

from .options import EngineOptions, MattingOptions

EXAMPLE = """example:
  spgim bench --model exported --backend onnxruntime,openvino,aotinductor,torchscript --precision fp32,fp16,bf16 \\
      --size 512x512 --batch 1 --warmup 2 --iters 10 --json bench.json --plot bench.png
  spgim bench --model exported --backend onnxruntime --precision fp32,fp16 --video clip.mp4 --work-size 512"""


def _run(args: argparse.Namespace) -> int:
    from spgim.runtime.bench import format_report, run_bench, write_report
    from spgim.runtime.registry import usable_backends
    from spgim.sizes import parse_size

    from .bench import video_bench

    height, width = parse_size(args.size)
    # Read before the model-only rows run: a bad --video option is refused before minutes of timing.
    matting = MattingOptions.from_args(args)
    video_duration = None if args.video_duration is None else SECONDS.read("--video-duration", args.video_duration)
    if args.backend == "all":  # only what this machine can run on this folder's formats
        backends = usable_backends(args.model)
    else:
        backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    report = run_bench(
        args.model,
        backends=backends,
        precisions=[p.strip() for p in args.precision.split(",") if p.strip()],
        height=height,
        width=width,
        batch=args.batch,
        warmup=args.warmup,
        iters=args.iters,
        threads=args.threads,
    )
    if args.video is not None:
        report["video"] = [
            video_bench(
                args.model,
                args.video,
                EngineOptions(backend=row["backend"], precision=row["precision"], threads=args.threads),
                matting,
                warmup=args.warmup,
                iters=args.iters,
                duration=video_duration,
            )
            for row in report["rows"]
        ]
    print(format_report(report))
    write_report(report, args.json, args.plot)
    return 0


def register(subparsers: Any) -> None:
    """Add ``bench`` to the ``spgim`` command."""
    parser = subparsers.add_parser(
        "bench",
        help="latency, FLOP rate and reduced- vs full-precision speed-up per backend",
        description="Benchmark an export folder per backend x precision against ResNet-50 on the same engine.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, type=Path, help="spgim export folder")
    parser.add_argument(
        "--backend",
        default="all",
        help="comma list of onnxruntime, openvino, aotinductor, torchscript, onnxruntime-twin, tensorrt, "
        "onnxruntime-trt, onnxruntime-cuda, torchscript-cuda; or all (default: every one this machine can run). "
        "A backend x precision this machine cannot run (no native bf16, no engine, no artifacts) is skipped "
        "with its reason",
    )
    parser.add_argument("--precision", default="fp32,fp16,bf16,int8", help="comma list (default fp32,fp16,bf16,int8)")
    parser.add_argument("--size", default="512x512", help="input WxH, multiples of 32 (default 512x512)")
    parser.add_argument("--batch", type=int, default=1, help="frames per call (default 1)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    parser.add_argument("--iters", type=int, default=10, help="timed runs (default 10)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: its default)")
    video = parser.add_argument_group("--video: the whole matte job on a clip, per row, as spgim matte runs it")
    video.add_argument("--video", type=Path, help="the clip to time end to end")
    MattingOptions.add_arguments(video)
    video.add_argument("--video-duration", metavar="TIME", help="only the first this many seconds (or M:SS)")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the report here")
    parser.set_defaults(handler=_run)
