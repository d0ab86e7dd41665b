"""``spgim export``: the command-line face of :mod:`spgim.export.exporter`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

EXAMPLE = """example:
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported \\
      --formats torchscript,onnx,onnx-trt --precision fp32,fp16 --height 512 --width 512
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported --formats engine \\
      --precision fp16 --height 512 --width 512 --dynamic --min-size 256x256 --max-size 1024x1024 \\
      --plugin build/native/libspgim_tst_plugin.so --workspace 4
  spgim export --spd runs/spd/best.pt --spgm runs/spgm/best.pt --out exported --formats onnx,openvino,pt2 \\
      --precision fp32,bf16 --height 512 --width 512 --dynamic --min-size 64x64 --max-size 1280x1280"""

# The forms of spgim.export.attention_nodes.PORTABLE_ATTENTION, described here so that building
# the parser does not import torch.
ATTENTION_FORMS = {
    "mha": "one com.microsoft MultiHeadAttention node, ONNX Runtime's fused CPU kernel, never stores the N x M scores",
    "blocked": "standard ops in an ONNX Loop over 1024-query blocks, one block of scores at a time",
    "sdpa": "the legacy exporter's scaled_dot_product_attention pattern, whole N x M scores",
    "matmul": "MatMul/Softmax/MatMul over the whole N x M scores (the portable graph before mha)",
}


def _run(args: argparse.Namespace) -> int:
    from spgim.sizes import parse_size

    from .exporter import ExportRequest, run_export

    request = ExportRequest(
        spd=args.spd,
        spgm=args.spgm,
        out=args.out,
        formats=[f.strip() for f in args.formats.split(",") if f.strip()],
        precisions=[p.strip() for p in args.precision.split(",") if p.strip()],
        height=args.height,
        width=args.width,
        dynamic=args.dynamic,
        min_size=parse_size(args.min_size) if args.min_size else None,
        max_size=parse_size(args.max_size) if args.max_size else None,
        opset=args.opset,
        workspace_gb=args.workspace,
        plugin=args.plugin,
        **({"attention": args.attention} if args.attention else {}),
        **({"upsample_radius": args.upsample_radius} if args.upsample_radius is not None else {}),
        **({"upsample_eps": args.upsample_eps} if args.upsample_eps is not None else {}),
    )
    try:
        artifacts = run_export(request)
    finally:
        for item in request.artifacts:
            where = args.out / item["file"]
            sidecar = json.loads(where.with_name(where.name + ".json").read_text())
            # With the files that travel with it (OpenVINO IR's .bin).
            size = (where.stat().st_size + sum(c["bytes"] for c in sidecar.get("companions", []))) / 1e6
            print(f"{item['branch']:<8} {item['format']:<12} {item['precision']:<5} {size:8.1f} MB  {where}")
    print(f"exported {len(artifacts)} artifacts to {args.out} (sidecars beside each, index in spgim-export.json)")
    return 0


def register(subparsers: Any) -> None:
    """Add ``export`` to the ``spgim`` command."""
    parser = subparsers.add_parser(
        "export",
        help="TorchScript, ONNX (portable and TensorRT flavours) and TensorRT engines",
        description="Export an SPD + SPGM checkpoint pair; every artifact gets a JSON sidecar.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spd", required=True, type=Path, help="SPD checkpoint")
    parser.add_argument("--spgm", required=True, type=Path, help="SPGM checkpoint trained with that SPD")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--formats",
        default="torchscript,onnx,onnx-trt",
        help="comma list of torchscript, onnx, onnx-trt, openvino (IR), pt2 (torch.export + AOTInductor, compiled "
        "for this CPU), engine (default torchscript,onnx,onnx-trt)",
    )
    parser.add_argument(
        "--precision",
        default="fp32,fp16",
        help="comma list of fp32, fp16 (ONNX, engines), bf16 (pt2); default fp32,fp16. TorchScript and OpenVINO IR "
        "are written in fp32 and cast by their runtimes",
    )
    parser.add_argument("--height", type=int, default=512, help="input height, a multiple of 32 (default 512)")
    parser.add_argument("--width", type=int, default=512, help="input width, a multiple of 32 (default 512)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch and spatial axes")
    parser.add_argument("--min-size", help="with --dynamic: smallest WxH of the engine profile (default half)")
    parser.add_argument("--max-size", help="with --dynamic: largest WxH of the engine profile (default double)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--workspace", type=float, default=4.0, help="TensorRT workspace in GB (default 4)")
    parser.add_argument("--plugin", type=Path, help="path of libspgim_tst_plugin.so (default: build/native)")
    parser.add_argument(
        "--attention",
        help="how the portable ONNX (--formats onnx) spells each TST attention: "
        + "; ".join(f"{name}: {text}" for name, text in ATTENTION_FORMS.items())
        + " (default mha: the fastest and smallest on ONNX Runtime and OpenVINO CPU)",
    )
    parser.add_argument(
        "--upsample-radius",
        type=int,
        help="radius, in working-size pixels, of the guided filter that brings the alpha to the frame's size (default "
        "1: the lowest MAE on the reference clips; 2 gives steadier edges, lower dtSSD, for a slightly higher MAE)",
    )
    parser.add_argument(
        "--upsample-eps",
        type=float,
        help="the guided filter's regularisation; larger is closer to bilinear (default 1e-4)",
    )
    parser.set_defaults(handler=_run)
