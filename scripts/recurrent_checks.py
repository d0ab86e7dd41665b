"""Robustness of a live pair against a baseline: warm-up, a hard cut, drift over a long stream, fp16 against fp32.

    .venv/bin/python scripts/recurrent_checks.py --model CANDIDATE_EXPORT --baseline R7_EXPORT --work /tmp/checks \\
        [--json checks.json] [--long-frames 3000]

On generated clips no training run sees (seeds 41-44), each export matted as `spgim eval --video` does
(onnxruntime, the export's working size and keyframe interval):

- warm-up: MAE over frames 0-14 of two 1280x720 clips, candidate over baseline (the memory starts at zero);
- cut: two 1280x720 clips joined at frame 45; MAE over the 30 frames after the cut (the state must not carry
  the old scene across it), candidate over baseline;
- drift: one ``--long-frames`` clip at 512x288; MAE over the last 300 frames over frames 15-315, per export;
- fp16: the candidate's alpha in fp16 and fp32 (`spgim matte --alpha`, lossless PNGs), mean absolute difference
  on frame 0 and over frames 300-329 (state carried 300 frames).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from spgim.train.data.clips import render_clip

CUT_AT = 45


def spgim(*arguments: str) -> None:
    """Run an ``spgim`` command; a failure ends the script with its message."""
    done = subprocess.run([sys.executable, "-m", "spgim", *arguments], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"spgim {' '.join(arguments[:1])} failed: {done.stderr.strip()[-400:]}")


def clip(work: Path, name: str, *, frames: int, size: tuple[int, int], seed: int) -> tuple[Path, Path]:
    """A generated clip and its true alpha under ``work`` (made once)."""
    video, alpha = work / f"{name}.mp4", work / f"{name}-alpha.mkv"
    if not alpha.exists():
        render_clip(video, frames=frames, size=size, fps=30, seed=seed, alpha_path=alpha)
    return video, alpha


def joined(work: Path, first: tuple[Path, Path], second: tuple[Path, Path]) -> tuple[Path, Path]:
    """``first``'s frames before :data:`CUT_AT` then ``second``'s: a hard cut (H.264 and lossless FFV1 alpha)."""
    video, alpha = work / "cut.mp4", work / "cut-alpha.mkv"
    if alpha.exists():
        return video, alpha
    for out_path, sources, codec, pixels in (
        (video, (first[0], second[0]), "libx264", "yuv420p"),
        (alpha, (first[1], second[1]), "ffv1", "gray"),
    ):
        frames: list[np.ndarray] = []
        for index, source in enumerate(sources):
            with av.open(str(source)) as container:
                decoded = [
                    f.to_ndarray(format="rgb24" if pixels == "yuv420p" else "gray") for f in container.decode(video=0)
                ]
            frames += decoded[:CUT_AT] if index == 0 else decoded[: len(decoded) - CUT_AT]
        with av.open(str(out_path), "w") as container:
            stream = container.add_stream(codec, rate=30)
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = pixels
            if codec == "libx264":
                stream.options = {"crf": "18"}
            for image in frames:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24" if pixels == "yuv420p" else "gray")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return video, alpha


def per_frame_mae(model: Path, video: Path, alpha: Path, out: Path, *extra: str) -> list[float]:
    """``spgim eval --video`` of ``model`` on ``video``: the MAE of every frame."""
    if not out.exists():
        spgim(
            "eval",
            "--video",
            str(video),
            "--truth",
            str(alpha),
            "--model",
            str(model),
            "--backend",
            "onnxruntime",
            "--json",
            str(out),
            *extra,
        )
    scores: dict[str, Any] = json.loads(out.read_text())
    scores = scores.get("scores", scores)
    return [float(value) for value in scores["per_frame"]["mae"]]


def alphas(model: Path, video: Path, folder: Path, precision: str) -> list[np.ndarray]:
    """The alpha ``spgim matte`` writes for ``video`` in ``precision``, as lossless 8-bit PNGs."""
    if not folder.exists():
        folder.mkdir(parents=True)
        spgim(
            "matte",
            str(video),
            "--model",
            str(model),
            "--backend",
            "onnxruntime",
            "--precision",
            precision,
            "--alpha",
            str(folder / "%05d.png"),
            "--duration",
            "11",
            "--quiet",
        )
    return [
        cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0 for path in sorted(folder.glob("*.png"))
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the candidate export (fp16 and fp32 onnx)")
    parser.add_argument("--baseline", type=Path, required=True, help="the export it is compared with")
    parser.add_argument("--work", type=Path, required=True, help="a folder for the clips and the scores")
    parser.add_argument("--long-frames", type=int, default=3000, help="frames of the drift clip (default 3000)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    exports = {"candidate": args.model, "baseline": args.baseline}
    results: dict[str, Any] = {}

    warm = [clip(args.work, f"warm{seed}", frames=30, size=(1280, 720), seed=seed) for seed in (41, 42)]
    warm_up = {
        name: float(np.mean([per_frame_mae(model, v, a, args.work / f"{name}-{v.stem}.json")[:15] for v, a in warm]))
        for name, model in exports.items()
    }
    results["warm_up"] = {**warm_up, "ratio": warm_up["candidate"] / warm_up["baseline"]}

    first = clip(args.work, "cut-a", frames=90, size=(1280, 720), seed=43)
    second = clip(args.work, "cut-b", frames=90, size=(1280, 720), seed=44)
    cut_video, cut_alpha = joined(args.work, first, second)
    after_cut = {
        name: float(
            np.mean(per_frame_mae(model, cut_video, cut_alpha, args.work / f"{name}-cut.json")[CUT_AT : CUT_AT + 30])
        )
        for name, model in exports.items()
    }
    results["after_cut"] = {**after_cut, "ratio": after_cut["candidate"] / after_cut["baseline"]}

    long_video, long_alpha = clip(args.work, "long", frames=args.long_frames, size=(512, 288), seed=45)
    drift: dict[str, Any] = {}
    for name, model in exports.items():
        mae = per_frame_mae(model, long_video, long_alpha, args.work / f"{name}-long.json")
        early, late = float(np.mean(mae[15:315])), float(np.mean(mae[-300:]))
        drift[name] = {"frames_15_315": early, "last_300": late, "ratio": late / early}
    results["drift"] = drift

    fp16 = alphas(args.model, long_video, args.work / "fp16", "fp16")
    fp32 = alphas(args.model, long_video, args.work / "fp32", "fp32")
    differences = [float(np.mean(np.abs(a - b))) for a, b in zip(fp16, fp32, strict=True)]
    results["fp16_vs_fp32"] = {"frame_0": differences[0], "frames_300_329": float(np.mean(differences[300:330]))}

    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
