"""What limits a pair's matte of generated clips: SPD's mask, or SPGM given a guide; and which keyframe guide
policy holds up. Eager PyTorch at one working size, against the clips' true alpha (``spgim data clip --alpha``).

    .venv/bin/python scripts/guide_study.py --spd spgim/weights/live-spd.pt --spgm spgim/weights/live-spgm.pt \\
        --clip runs/ref/clips/clip-0.mp4:runs/ref/clips/clip-0-alpha.mkv [--clip ...] --size 320x192 --json out.json

Per clip, on every ``--every``-th frame: SPD's own mask (IoU at 0.5 against the truth at SPD's stride), SPGM
guided by SPD's mask, and SPGM guided by S(true alpha) (what SPGM can do with a perfect guide). Then over the
first ``--frames`` frames in order, the stream's policies at keyframe interval ``--interval``: ``spd`` (SPD's
mask on keyframes, S(previous alpha) between them: what ``spgim matte`` does), ``propagated`` (S(previous
alpha) on keyframes too, SPD's mask on the first frame only) and ``every`` (SPD on every frame, K=0):
IoU, MAE and dtSSD.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch

from spgim.sizes import parse_size
from spgim.train.checkpoint import load_checkpoint, load_model
from spgim.train.models import saliency_target


def read(path: str, count: int, fmt: str, size: tuple[int, int]) -> np.ndarray:
    """The first ``count`` frames of ``path`` area-resized to ``size`` (w, h): uint8 RGB or float alpha."""
    frames = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            frames.append(cv2.resize(frame.to_ndarray(format=fmt), size, interpolation=cv2.INTER_AREA))
            if len(frames) == count:
                break
    stack = np.stack(frames)
    return stack if fmt == "rgb24" else stack.astype(np.float32) / 255.0


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    union = ((prediction > 0.5) | (truth > 0.5)).sum()
    return float(((prediction > 0.5) & (truth > 0.5)).sum() / max(union, 1))


def dtssd(prediction: np.ndarray, truth: np.ndarray) -> float:
    change = (prediction[1:] - prediction[:-1]) - (truth[1:] - truth[:-1])
    return float(np.mean(np.sqrt((change**2).mean(axis=(1, 2)))) * 100)


def scores(prediction: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "iou": round(float(np.mean([iou(p, t) for p, t in zip(prediction, truth, strict=True)])), 3),
        "mae": round(float(np.abs(prediction - truth).mean()), 4),
        "dtssd": round(dtssd(prediction, truth), 2) if len(prediction) > 1 else 0.0,
    }


def tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def guides(spd: Any, spgm: Any, frames: np.ndarray, truth: np.ndarray, sigma: float) -> dict[str, Any]:
    """SPD's mask, SPGM with SPD's guide, SPGM with the true guide, on the same frames."""
    mask, *features = spd(tensor(frames))
    small = np.stack([cv2.resize(t, mask.shape[-1:-3:-1], interpolation=cv2.INTER_AREA) for t in truth])
    true_guide = saliency_target(torch.from_numpy(truth[:, None]), mask.shape[-2:], sigma)
    return {
        "spd_mask": scores(mask[:, 0].numpy(), small),
        "spgm_spd_guide": scores(spgm(tensor(frames), mask, *features)[:, 0].numpy(), truth),
        "spgm_true_guide": scores(spgm(tensor(frames), true_guide, *features)[:, 0].numpy(), truth),
    }


@torch.no_grad()
def policy(spd: Any, spgm: Any, frames: np.ndarray, interval: int, mode: str, sigma: float) -> np.ndarray:
    """Alphas of the frames in order under a keyframe guide policy (see the module's docstring)."""
    alphas: list[np.ndarray] = []
    features: list[torch.Tensor] = []
    previous = None
    for index, frame in enumerate(frames):
        image = tensor(frame[None])
        keyframe = mode == "every" or index % interval == 0
        if keyframe:
            features = list(spd(image))
        if previous is None or (keyframe and mode != "propagated"):
            guide = features[0]
        else:
            guide = saliency_target(previous, features[0].shape[-2:], sigma)
        previous = spgm(image, guide, *features[1:])
        alphas.append(previous[0, 0].numpy())
    return np.stack(alphas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spd", required=True, type=Path)
    parser.add_argument("--spgm", required=True, type=Path)
    parser.add_argument("--clip", action="append", required=True, help="VIDEO:TRUTH, repeatable")
    parser.add_argument("--size", default="320x192", help="working size WxH (default 320x192)")
    parser.add_argument("--frames", type=int, default=60, help="frames of each clip for the policies (default 60)")
    parser.add_argument("--every", type=int, default=6, help="every n-th of 90 frames for the guide study")
    parser.add_argument("--interval", type=int, default=8, help="keyframe interval of the policies (default 8)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    height, width = parse_size(args.size)
    spd, spgm = load_model(args.spd, "spd").eval(), load_model(args.spgm, "spgm").eval()
    sigma = float(load_checkpoint(args.spd)["extra"].get("mask_sigma", 1.0))
    report: dict[str, Any] = {"spd": str(args.spd), "spgm": str(args.spgm), "size": f"{width}x{height}", "clips": {}}
    for spec in args.clip:
        video, truth_path = spec.rsplit(":", 1)
        frames, truth = read(video, 90, "rgb24", (width, height)), read(truth_path, 90, "gray", (width, height))
        row = guides(spd, spgm, frames[:: args.every], truth[:: args.every], sigma)
        n = args.frames
        for mode in ("spd", "propagated", "every"):
            row[f"policy_{mode}"] = scores(policy(spd, spgm, frames[:n], args.interval, mode, sigma), truth[:n])
        report["clips"][Path(video).name] = row
        print(Path(video).name, json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
