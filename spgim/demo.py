"""``spgim demo`` / ``make demo``: the main job on the embedded default, no GPU and no downloads.

It generates a small set with the project's scene generator, trains the tiny configuration's
three stages (caption -> SPD -> SPGM) for a bounded few minutes, prints the evaluation metrics,
exports the pair, renders a short clip (moving objects over a photo, with music), mattes it with
the best available backend into a composite MP4 and a ProRes 4444 foreground, and prints the bench
table. A second run reuses the data, checkpoints, export and clip it finds in the output folder.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEMO_SCENES = 120
DEMO_SIZE = 128
DEMO_SEED = 0
CLIP_SIZE = (320, 192)  # (width, height): the working size as well, so the model sees every pixel
CLIP_FRAMES = 48


def _stage(name: str, out: Path, argv: list[str]) -> Path:
    """Train one stage unless its best checkpoint is already there; returns that checkpoint."""
    from spgim.cli import main

    best = out / name / "best.pt"
    if best.is_file():
        print(f"demo: reusing {best}")
        return best
    started = time.perf_counter()
    code = main(["train", name, "--out", str(out / name), *argv])
    if code != 0:
        raise SystemExit(code)
    print(f"demo: trained {name} in {time.perf_counter() - started:.0f} s")
    return best


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``spgim demo``."""
    from spgim.train.config import get_config
    from spgim.train.data.synth import generate_dataset
    from spgim.train.summary import format_summary, model_summary

    out: Path = args.out
    config = get_config("paper")
    print(format_summary(model_summary(config, config["image_size"], config["image_size"])), end="\n\n")

    data = out / "data"
    if (data / "scenes.json").is_file():
        print(f"demo: reusing the generated scenes in {data}")
    else:
        summary = generate_dataset(data, count=args.scenes, size=DEMO_SIZE, seed=DEMO_SEED)
        print(f"demo: generated {summary['scenes']} scenes in {data} ({summary['scenes_per_minute']:.0f} scenes/min)")
    runs = out / "runs"
    common = ["--data", str(data), "--config", "tiny", "--workers", str(args.workers)]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    caption = _stage("caption", runs, common)
    spd = _stage("spd", runs, [*common, "--init", str(caption)])
    spgm = _stage("spgm", runs, [*common, "--spd", str(spd)])
    code = _evaluate(spd, spgm, data, out / "metrics.json")
    if code != 0:
        return code
    model = _export(spd, spgm, out / "export")
    clip = _clip(out / "clip.mp4", args.clip_frames)
    _matte(model, clip, out)
    _bench(model, clip, out, args.bench_iters)
    return 0


def _evaluate(spd: Path, spgm: Path, data: Path, out: Path) -> int:
    from spgim.cli import main

    print(f"demo: evaluating {spgm} on {data / 'test'}")
    return main(["eval", "--spd", str(spd), "--spgm", str(spgm), "--data", str(data), "--out", str(out)])


def _export(spd: Path, spgm: Path, folder: Path) -> Path:
    from spgim.cli import main

    if (folder / "spgim-export.json").is_file():
        print(f"demo: reusing the export in {folder}")
        return folder
    width, height = CLIP_SIZE
    argv = ["export", "--spd", str(spd), "--spgm", str(spgm), "--out", str(folder)]
    argv += ["--formats", "torchscript,onnx,onnx-trt", "--precision", "fp32,fp16"]
    argv += [
        "--height",
        str(height),
        "--width",
        str(width),
        "--dynamic",
        "--min-size",
        "64x64",
        "--max-size",
        "512x512",
    ]
    if main(argv) != 0:
        raise SystemExit(1)
    return folder


def _truth_of(clip: Path) -> Path:
    """Where the clip's true alpha is written: ``clip-alpha.mkv`` beside it (lossless FFV1)."""
    return clip.with_name(f"{clip.stem}-alpha.mkv")


def _clip(path: Path, frames: int) -> Path:
    from spgim.train.data.clip import render_clip

    if path.is_file() and _truth_of(path).is_file():
        print(f"demo: reusing the clip {path}")
        return path
    info = render_clip(path, frames=frames, size=CLIP_SIZE, fps=24, seed=DEMO_SEED, alpha_path=_truth_of(path))
    width, height = info.size
    print(f"demo: rendered {path} ({info.frames} frames, {width}x{height}, objects: {', '.join(info.objects)})")
    return path


def _matte(model: Path, clip: Path, out: Path) -> None:
    from spgim.streaming.job import matte_video

    result = matte_video(
        clip,
        model=model,
        output=out / "composite.mp4",
        foreground=out / "foreground.mov",
        alpha=out / "alpha",  # PNGs: lossless, so the quality line scores the model, not an encoder
        work_size=max(CLIP_SIZE),
        progress=False,
    )
    for note in result.notes:
        print(f"demo: note: {note}")
    print(f"demo: matted {clip} -> {out / 'composite.mp4'}, {out / 'foreground.mov'} (ProRes 4444)")
    print(f"demo: {result.summary_line()}")
    _quality(out / "alpha", _truth_of(clip), out / "quality.json")


def _quality(predicted: Path, truth: Path, report: Path) -> None:
    """The matte against the clip's true alpha, from the files on disk (the same evaluation as spgim eval --video)."""
    import json

    from spgim.train.video_metrics import evaluate_alpha_videos

    scores = evaluate_alpha_videos(predicted, truth)
    report.write_text(json.dumps(scores.to_json(), indent=2) + "\n")
    print(f"demo: quality against the true alpha {truth.name}: {scores.summary_line()}")


def _bench(model: Path, clip: Path, out: Path, iters: int) -> None:
    """Every backend x precision this machine can run on the export; what it cannot run is listed with its reason."""
    from spgim.runtime.bench import format_report, run_bench, write_report
    from spgim.runtime.registry import usable_backends
    from spgim.streaming.bench import video_bench

    width, height = CLIP_SIZE
    report = run_bench(
        model,
        backends=usable_backends(model),
        precisions=["fp32", "fp16", "bf16"],
        height=height,
        width=width,
        warmup=1,
        iters=iters,
    )
    # The end-to-end row runs what the matte step's auto picked (the cached ranking: no second measurement).
    video = video_bench(model, clip, backend="auto", precision="fp32", work_size=max(CLIP_SIZE), warmup=1, iters=iters)
    report["video"] = [video]
    print(format_report(report))
    write_report(report, out / "bench.json", out / "bench.png")
    print(f"demo: bench report in {out / 'bench.json'} and {out / 'bench.png'}")


def register(subparsers: Any) -> None:
    """Add ``demo`` to the ``spgim`` command."""
    demo = subparsers.add_parser(
        "demo",
        help="the main job on the embedded default (what `make demo` runs)",
        description=__doc__,
        epilog="example:\n  spgim demo\n  spgim demo --out demo-output",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    demo.add_argument("--workers", type=int, default=1, help="DataLoader workers (default 1)")
    demo.add_argument("--scenes", type=int, default=DEMO_SCENES, help=f"scenes to generate (default {DEMO_SCENES})")
    demo.add_argument("--epochs", type=int, help="epochs of every stage (default: the tiny recipes')")
    demo.add_argument("--clip-frames", type=int, default=CLIP_FRAMES, help=f"frames of the demo clip ({CLIP_FRAMES})")
    demo.add_argument("--bench-iters", type=int, default=5, help="timed runs per bench row (default 5)")
    demo.set_defaults(handler=run_demo)
