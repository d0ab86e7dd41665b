"""Two SPD/SPGM checkpoint pairs side by side on generated clips they never saw: IoU at 0.5 and MAE per seed.

    .venv/bin/python scripts/compare_pairs.py --pair old=R1/spd/best.pt,R1/spgm/best.pt \\
        --pair new=R2/spd/best.pt,R2/spgm/best.pt --seeds 3-8 --size 320x192 [--json out.json]

Each seed renders a 640x384 clip (``spgim.train.data.clips``, 12 frames); frames 0, 4 and 8 are matted with SPD on
every frame (eager PyTorch) at the working size and scored against the true alpha there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from spgim.sizes import parse_size
from spgim.train.checkpoint import load_model
from spgim.train.data.clips import render_frames


def seeds(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", required=True, help="NAME=SPD.pt,SPGM.pt (repeatable)")
    parser.add_argument("--seeds", default="3-8", help="clip seeds, e.g. 3-8 (default)")
    parser.add_argument("--size", default="320x192", help="working size WxH (default 320x192)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    height, width = parse_size(args.size)
    pairs = {}
    for spec in args.pair:
        name, _, paths = spec.partition("=")
        spd_path, spgm_path = paths.split(",")
        pairs[name] = (load_model(spd_path, "spd").eval(), load_model(spgm_path, "spgm").eval())
    report: dict[str, dict[str, dict[str, float]]] = {name: {} for name in pairs}
    for seed in seeds(args.seeds):
        images, alphas, photo, objects = render_frames(frames=12, size=(640, 384), seed=seed)
        line = [f"seed {seed} ({', '.join(objects)} over {photo})"]
        for name, (spd, spgm) in pairs.items():
            ious, errors = [], []
            for image, truth in zip(images[::4], alphas[::4], strict=True):
                small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
                with torch.no_grad():
                    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
                    alpha = spgm(x, *spd(x))[0, 0].numpy()
                target = cv2.resize(truth, (width, height), interpolation=cv2.INTER_AREA) / 255.0
                union = ((alpha > 0.5) | (target > 0.5)).sum()
                ious.append(((alpha > 0.5) & (target > 0.5)).sum() / max(union, 1))
                errors.append(np.abs(alpha - target).mean())
            report[name][str(seed)] = {"iou": round(float(np.mean(ious)), 3), "mae": round(float(np.mean(errors)), 4)}
            line.append(f"{name} IoU {np.mean(ious):.3f} MAE {np.mean(errors):.4f}")
        print(" | ".join(line), flush=True)
    for name, rows in report.items():
        iou = np.mean([r["iou"] for r in rows.values()])
        mae = np.mean([r["mae"] for r in rows.values()])
        print(f"{name}: mean IoU {iou:.3f} MAE {mae:.4f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
