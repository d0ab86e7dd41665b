"""``spgim export``: the command-line face of :mod:`spgim.export.exporter`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .formats import FORMATS, format_table
from .plan import DEFAULT_OPSET, DEFAULT_WORKSPACE_GB, ExportRequest, plan_export
from .profile import COMMON_FRAMES, DEFAULT_ASPECT

TRITON_FOLDER = "triton"
EXAMPLE = """example:
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported --dynamic
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported \\
      --formats torchscript,onnx,onnx-trt --precision fp32,fp16 --size 512x288
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported --formats engine \\
      --precision fp16 --size 512x288 --dynamic --min-size 256x128 --max-size 1024x576 \\
      --plugin build/native/libspgim_tst_plugin.so --workspace 4
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported --formats onnx,openvino,pt2 \\
      --precision fp32,bf16 --dynamic --min-size 64x64 --max-size 1280x1280
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported --formats onnx,openvino --triton"""

# The forms of spgim.export.attention_nodes.PORTABLE_ATTENTION, described here so that building
# the parser does not import torch.
ATTENTION_FORMS = {
    "mha": "one com.microsoft MultiHeadAttention node, ONNX Runtime's fused CPU kernel, never stores the N x M scores",
    "blocked": "standard ops in an ONNX Loop over 1024-query blocks, one block of scores at a time",
    "sdpa": "the legacy exporter's scaled_dot_product_attention pattern, whole N x M scores",
    "matmul": "MatMul/Softmax/MatMul over the whole N x M scores (the portable graph before mha)",
}


def _request(args: argparse.Namespace) -> ExportRequest:
    """The :class:`~spgim.export.plan.ExportRequest` of the parsed flags (``--size``, or its aliases)."""
    from spgim.errors import SpgimError
    from spgim.option_groups import NUMBER, WHOLE, ValueType
    from spgim.sizes import parse_size

    def value(kind: ValueType, option: str) -> Any:
        # Numbers are parsed here, not by argparse, so that a bad one is one line and not the usage block.
        text = getattr(args, option.removeprefix("--").replace("-", "_"))
        return None if text is None else kind.read(option, text)

    height, width = value(WHOLE, "--height"), value(WHOLE, "--width")
    if args.size is not None:
        if height is not None or width is not None:
            raise SpgimError("give the export size as --size WxH or as --height and --width, not both")
        height, width = parse_size(args.size)
    return ExportRequest(
        spd=args.spd,
        spgm=args.spgm,
        out=args.out,
        formats=[f.strip() for f in args.formats.split(",") if f.strip()],
        precisions=None if args.precision is None else [p.strip() for p in args.precision.split(",") if p.strip()],
        height=height,
        width=width,
        dynamic=args.dynamic,
        min_size=parse_size(args.min_size) if args.min_size else None,
        max_size=parse_size(args.max_size) if args.max_size else None,
        opset=value(WHOLE, "--opset"),
        workspace_gb=value(NUMBER, "--workspace"),
        plugin=args.plugin,
        attention=args.attention,
        upsample_radius=value(WHOLE, "--upsample-radius"),
        upsample_eps=value(NUMBER, "--upsample-eps"),
        calibration=args.calibration,
        accept_accuracy_loss=args.accept_accuracy_loss,
    )


def _run(args: argparse.Namespace) -> int:
    request = _request(args)
    plan_export(request)  # what does not fit the format table is refused here, before torch is imported

    from .exporter import MANIFEST, run_export

    try:
        artifacts = run_export(request, progress=print)
    finally:
        for item in request.artifacts:
            where = args.out / item["file"]
            sidecar = json.loads(where.with_name(where.name + ".json").read_text())
            # With the files that travel with it (OpenVINO IR's .bin).
            size = (where.stat().st_size + sum(c["bytes"] for c in sidecar.get("companions", []))) / 1e6
            print(f"{item['branch']:<8} {item['format']:<12} {item['precision']:<5} {size:8.1f} MB  {where}")
    print(f"exported {len(artifacts)} artifacts to {args.out} (sidecars beside each, index in {MANIFEST})")
    if args.triton:
        # The one place export reaches up to serving: the repository is written from the finished export folder.
        from spgim.serving.repository import write_export_repository

        repository = args.out / TRITON_FOLDER
        models = write_export_repository(args.out, repository)
        print(f"Triton model repository {repository}: {', '.join(models)} (spgim serve --model {repository})")
    return 0


def _changes(option: str) -> str:
    """``changes onnx, openvino only``: the formats an option applies to (it is refused for the others)."""
    return "changes " + ", ".join(name for name, record in FORMATS.items() if option in record.options) + " only"


PRECISION_RULE = (
    "comma list of fp32, fp16, bf16, int8: each format is written in those it takes (the table below), and without "
    "--precision in its defaults (in brackets). A format that takes none of them, or a precision that no format "
    "asked for takes, is refused; the export says what it writes before it starts. The upsample graph is fp32 "
    "whatever the precisions"
)


def register(subparsers: Any) -> None:
    """Add ``export`` to the ``spgim`` command."""
    help_columns = ("format", "precisions (default)", "files", "made from", "options")
    parser = subparsers.add_parser(
        "export",
        help="TorchScript, ONNX (portable and TensorRT flavours), OpenVINO IR, AOTInductor and TensorRT engines",
        description="Export an SPD + SPGM checkpoint pair; every artifact gets a JSON sidecar.",
        epilog=f"{EXAMPLE}\n\nformats ({{branch}}: spd, spgm and upsample):\n{format_table(help_columns)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spd", required=True, type=Path, help="SPD checkpoint")
    parser.add_argument("--spgm", required=True, type=Path, help="SPGM checkpoint trained with that SPD")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--formats",
        default="torchscript,onnx,onnx-trt",
        help=f"comma list of {', '.join(FORMATS)} (the table below; default torchscript,onnx,onnx-trt)",
    )
    parser.add_argument("--precision", help=PRECISION_RULE)
    aspects = ", ".join(COMMON_FRAMES)
    parser.add_argument(
        "--size",
        metavar="WxH",
        help="export size, multiples of 32: what the graphs are traced at, TensorRT optimises for and the only size "
        f"without --dynamic (default: the configuration's working size, stream.work_size, of a {DEFAULT_ASPECT} frame)",
    )
    parser.add_argument("--height", metavar="H", help="with --width, the same as --size WxH")
    parser.add_argument("--width", metavar="W", help="with --height, the same as --size WxH")
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic batch and working size, from --min-size to --max-size (default: half to double of --size, "
        f"widened to hold the configuration's working sizes at {aspects})",
    )
    parser.add_argument("--min-size", metavar="WxH", help="with --dynamic: the smallest working size")
    parser.add_argument("--max-size", metavar="WxH", help="with --dynamic: the largest working size")
    parser.add_argument("--opset", metavar="N", help=f"ONNX opset (default {DEFAULT_OPSET}); {_changes('--opset')}")
    parser.add_argument(
        "--workspace",
        metavar="GB",
        help=f"TensorRT workspace in GB (default {DEFAULT_WORKSPACE_GB:g}); {_changes('--workspace')}",
    )
    parser.add_argument(
        "--plugin",
        type=Path,
        help=f"path of libspgim_tst_plugin.so (default: build/native); {_changes('--plugin')}",
    )
    parser.add_argument(
        "--attention",
        help="how the portable ONNX spells each TST attention: "
        + "; ".join(f"{name}: {text}" for name, text in ATTENTION_FORMS.items())
        + f" (default mha: the fastest and smallest on ONNX Runtime and OpenVINO CPU); {_changes('--attention')}",
    )
    parser.add_argument(
        "--upsample-radius",
        metavar="R",
        help="radius, in working-size pixels, of the guided filter that brings the alpha to the frame's size (default "
        "1: the lowest MAE on the reference clips; 2 gives steadier edges, lower dtSSD, for a slightly higher MAE)",
    )
    parser.add_argument(
        "--upsample-eps",
        metavar="EPS",
        help="the guided filter's regularisation; larger is closer to bilinear (default 1e-4)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="DATA",
        help="int8: a folder of images like the ones to be matted (read recursively, up to 200), to calibrate the "
        "quantization on (default: 200 generated scenes); " + _changes("--calibration"),
    )
    parser.add_argument(
        "--accept-accuracy-loss",
        action="store_true",
        help="int8: write the quantized pair even where its alpha misses the accuracy gate (mean abs difference from "
        "fp32 at most 0.01, SAD within 3%%); the sidecars say it missed, and --precision auto never picks it; "
        + _changes("--accept-accuracy-loss"),
    )
    parser.add_argument(
        "--triton",
        action="store_true",
        help=f"also write a Triton model repository, OUT/{TRITON_FOLDER}: the Python-backend models 'spgim' and "
        "'spgim_live' over this export (served by spgim serve --model OUT/triton), and, with the fp32 onnx format, "
        "the native flavour for a stock Triton (ONNX Runtime models, an ensemble, TensorRT configs)",
    )
    parser.set_defaults(handler=_run)
