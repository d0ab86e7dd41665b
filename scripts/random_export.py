"""A random-weight SPD/SPGM pair of a configuration, saved as checkpoints and exported with ``spgim export``.

Benchmarks of speed and memory need the model's shapes, not trained weights; this makes the export that
the paper-config figures of docs/benchmarks.md are measured on:

    .venv/bin/python scripts/random_export.py --config paper --out /tmp/paper \\
        --formats torchscript,onnx,openvino,pt2 --precision fp32 --size 512x512 --max-size 1280x1280

Everything after the known options is passed on to ``spgim export``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from spgim.cli import main as spgim_main
from spgim.sizes import parse_size
from spgim.train.checkpoint import save_checkpoint, weights_digest
from spgim.train.config import get_config
from spgim.train.models import build_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="paper", help="model configuration (default paper)")
    parser.add_argument("--out", required=True, type=Path, help="folder for spd.pt, spgm.pt and model/")
    parser.add_argument("--formats", default="torchscript,onnx", help="spgim export --formats")
    parser.add_argument("--precision", default="fp32", help="spgim export --precision")
    parser.add_argument("--size", default="512x512", help="export size WxH (default 512x512)")
    parser.add_argument("--min-size", default="64x64", help="smallest dynamic size (default 64x64)")
    parser.add_argument("--max-size", default="1280x1280", help="largest dynamic size (default 1280x1280)")
    parser.add_argument("--seed", type=int, default=0)
    args, passthrough = parser.parse_known_args()
    torch.manual_seed(args.seed)
    config = get_config(args.config)
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / "spd.pt", branch="spd", config=config, model=spd)
    extra = {"spd_digest": weights_digest(spd.state_dict())}
    save_checkpoint(args.out / "spgm.pt", branch="spgm", config=config, model=spgm, extra=extra)
    height, width = parse_size(args.size)
    argv = ["export", "--spd", str(args.out / "spd.pt"), "--spgm", str(args.out / "spgm.pt")]
    argv += ["--out", str(args.out / "model"), "--formats", args.formats, "--precision", args.precision]
    argv += ["--height", str(height), "--width", str(width), "--dynamic"]
    argv += ["--min-size", args.min_size, "--max-size", args.max_size, *passthrough]
    return spgim_main(argv)


if __name__ == "__main__":
    sys.exit(main())
