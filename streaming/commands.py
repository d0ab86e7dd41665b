"""``spgim matte``: the command-line face of :func:`spgim.streaming.job.matte_video`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .network import STARTUP_TIMEOUT_S

EXAMPLE = """example:
  spgim matte clip.mp4 --model exported --output composite.mp4 --foreground subject.mov
  spgim matte clip.mp4 --model exported --output out.mp4 --background beach.jpg --alpha alpha.mp4
  spgim matte rtsp://camera.local/stream --model exported --output live.mp4 --duration 60
  spgim matte 0 --model exported --output webcam.mp4 --preview
  spgim matte rtsp://camera.local/stream --model exported --output rtmp://server/live/key --output record.mp4"""


def _seconds(text: str) -> float:
    """Seconds from ``12.5``, ``1:30`` or ``0:01:30``."""
    parts = text.split(":")
    try:
        value = 0.0
        for part in parts:
            value = value * 60 + float(part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time (seconds, M:SS or H:MM:SS)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _run(args: argparse.Namespace) -> int:
    # Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning on the
    # cores the decoder and encoder threads need (as ONNX Runtime's spinning is turned off).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from .job import matte_video

    result = matte_video(
        args.input,
        model=args.model,
        output=args.output,
        alpha=args.alpha,
        foreground=args.foreground,
        background=args.background,
        work_size=args.work_size,
        keyframe_interval=args.keyframe_interval,
        smoothing=args.smoothing,
        keyframe_ramp=args.keyframe_ramp,
        upsampling=args.upsample,
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        batch=args.batch,
        codec=args.codec,
        quality=args.quality,
        preset=args.preset,
        live=True if args.live else None,
        start=args.start,
        duration=args.duration,
        max_reconnects=args.reconnects,
        stall_timeout=args.stall_timeout,
        startup_timeout=args.startup_timeout,
        rtsp_transport=args.rtsp_transport,
        preview=args.preview,
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
    parser.add_argument("--model", required=True, help="spgim export folder")
    parser.add_argument(
        "--output",
        action="append",
        help="composite video (.mp4/.mkv/.mov: H.264; .webm: VP9; a folder: PNGs), or a stream to publish live "
        "(rtmp://, rtsp://, srt://, udp://: H.264 zero-latency, reconnected when the destination drops); "
        "repeat to write several, e.g. a stream and a recording",
    )
    parser.add_argument("--alpha", help="greyscale alpha video (or PNG folder, or a stream URL)")
    parser.add_argument("--foreground", help="foreground with alpha: .mov ProRes 4444, .webm VP9, or a PNG folder")
    parser.add_argument("--background", default="green", help="green (default), #RRGGBB, an image or a video (looped)")
    parser.add_argument(
        "--work-size", type=int, help="longer side the model sees (default: the export's; 512 for paper and tiny)"
    )
    parser.add_argument(
        "--keyframe-interval",
        type=int,
        metavar="K",
        help="run SPD every K frames and on scene cuts, SPGM every frame guided by the previous alpha; 0: SPD on "
        "every frame (default: the export's; 0 for paper and tiny, 8 for live)",
    )
    parser.add_argument(
        "--smoothing",
        type=float,
        metavar="S",
        help="temporal smoothing of the alpha where the frame is still: S x the previous alpha + (1 - S) x the new "
        "one, 0 <= S < 1 (default: the export's, 0 = off; lowers flicker, lags still edges slightly)",
    )
    parser.add_argument(
        "--keyframe-ramp",
        type=int,
        metavar="R",
        help="phase a keyframe's correction in over R frames instead of switching at once (one more SPGM run per "
        "keyframe; default: the export's, 4; 0 = switch at once)",
    )
    parser.add_argument(
        "--upsample",
        default="auto",
        choices=("auto", "guided", "guided-cv2", "bilinear"),
        help="alpha to full size: guided (the export's guided-filter graph, on the engine), guided-cv2 (the same "
        "filter in OpenCV, CPU only), bilinear, or auto (default: the graph on a GPU, guided-cv2 on the CPU, where "
        "the graph costs more than a live frame's budget)",
    )
    parser.add_argument(
        "--backend",
        default="auto",
        help="auto (default: the fastest measured on this machine, ranking cached next to the model), onnxruntime, "
        "openvino, aotinductor, torchscript, tensorrt, onnxruntime-cuda, onnxruntime-trt, torchscript-cuda",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help="fp32 (default), fp16, bf16, or auto: the fastest measured whose alpha stays within 5e-3 mean of fp32",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for the model (0: the backend's choice)")
    parser.add_argument("--batch", type=int, default=1, help="frames per model call for recorded input (default 1)")
    parser.add_argument("--codec", help="override the codec: h264, h265, vp9, prores, png")
    parser.add_argument("--quality", type=int, help="0-100, higher is better (default: visually lossless)")
    parser.add_argument(
        "--preset", help="H.264/H.265 encoder preset (default: veryfast for files, ultrafast for live sources)"
    )
    parser.add_argument("--preview", action="store_true", help="show the composite in a window")
    parser.add_argument("--live", action="store_true", help="drop late frames (default for network and webcam input)")
    parser.add_argument("--start", type=_seconds, help="start at this time (seconds or M:SS)")
    parser.add_argument("--duration", type=_seconds, help="matte this long (seconds or M:SS)")
    parser.add_argument("--reconnects", type=int, default=5, help="live: reconnect attempts in a row (default 5)")
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="live: a source that delivers no frame for this long is dropped and reopened (default 2); an RTMP or "
        "SRT connection that goes silent is waited on instead, up to --startup-timeout (its server holds it while "
        "the publisher is away, and passes on the restarted stream from its first keyframe)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=STARTUP_TIMEOUT_S,
        metavar="SECONDS",
        help=f"live: a source must give its first picture within this long of opening; a player that joins "
        f"between keyframes waits for the next (default {STARTUP_TIMEOUT_S:g}: keyframes 10 s apart, plus "
        "connecting); a source not up yet is retried up to --reconnects times",
    )
    parser.add_argument(
        "--rtsp-transport",
        choices=("udp", "tcp"),
        help="RTP over UDP or interleaved in the RTSP connection (TCP: through firewalls and NAT, no loss) "
        "(default: FFmpeg's, UDP falling back to TCP)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run)
