"""``spgim demo`` / ``make demo``: the main job on the embedded default, no GPU and no downloads.

It generates a small set with the project's scene generator and fine-tunes the tiny configuration's
reference SPD and SPGM (shipped in spgim/weights: caption -> SPD -> SPGM on generated scenes with
``scripts/train_reference.sh tiny``, then continued; weights/tiny.json holds the commands) briefly on
it, prints the evaluation metrics, exports the pair, renders a short clip (moving objects over a photo,
with music), mattes it with the best available backend into a composite MP4 and a ProRes 4444
foreground, with its quality against the clip's true alpha. Then the live part (in OUT/live): the
``live`` configuration's reference pair fine-tuned the same way, exported, and a 1280x720 clip matted
(keyframe interval from the export) into a composite MP4 with its quality. Last, the bench table, with
a 720p video row for the live model. A second run reuses the data, checkpoints, exports and clips it
finds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEMO_SCENES = 120
DEMO_SIZE = 128
DEMO_SEED = 0
CLIP_SIZE = (320, 192)  # (width, height): the working size as well, so the model sees every pixel
CLIP_FRAMES = 48
TINY_EXPORT = ["--formats", "torchscript,onnx,onnx-trt", "--precision", "fp32,fp16"]
TINY_EXPORT += ["--height", str(CLIP_SIZE[1]), "--width", str(CLIP_SIZE[0])]
TINY_EXPORT += ["--dynamic", "--min-size", "64x64", "--max-size", "512x512"]

# Both models start from the reference pairs shipped in spgim/weights, fine-tuned briefly on the demo scenes.
TUNE_EPOCHS = 2  # per stage (--epochs overrides it)
TUNE_STEPS_PER_EPOCH = 20  # a few seconds per epoch on two CPU cores (tiny: about 1.5 s of SPD, 5.5 s of SPGM)
# Adam's rate per branch, a tenth of the recipes': adapt the reference, do not retrain it. Fresh Adam's
# first steps move every weight by about the rate, so at tiny's earlier 1e-3 / 5e-4 the result hung on the
# seed (demo clip IoU 0.915 / 0.908 / 0.778 at seeds 0-2 from the shipped pair); at these, 0.897 / 0.904 /
# 0.889. Longer tuning (3 x 30 steps) made it worse: 120 scenes are soon overfitted.
TUNE_LR = {"spd": 3e-4, "spgm": 2e-4}  # both configurations
TUNE_CROP = 128  # the demo scenes' size: the live recipe's 256 crops would only upscale them, at 4x the cost
LIVE_CLIP_SIZE = (1280, 720)  # works at 320x192, the live configuration's working size
LIVE_CLIP_FRAMES = 60
LIVE_CLIP_FPS = 30
# 320x192 is the working size of a 16:9 frame; the dynamic profile covers other shapes as well.
LIVE_EXPORT = ["--formats", "onnx,openvino,torchscript", "--precision", "fp32", "--height", "192", "--width", "320"]
LIVE_EXPORT += ["--dynamic", "--min-size", "64x64", "--max-size", "512x512"]


@contextmanager
def _timed(label: str, times: dict[str, float]) -> Iterator[None]:
    """Record the wall time of one part of the demo under ``label``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        times[label] = time.perf_counter() - started


def _stage(name: str, out: Path, argv: list[str], label: str = "") -> Path:
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
    print(f"demo: trained {label}{name} in {time.perf_counter() - started:.0f} s")
    return best


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``spgim demo``."""
    from spgim.train.config import get_config
    from spgim.train.data.synth import generate_dataset
    from spgim.train.summary import format_summary, model_summary

    out: Path = args.out
    times: dict[str, float] = {}
    started = time.perf_counter()
    config = get_config("paper")
    print(format_summary(model_summary(config, config["image_size"], config["image_size"])), end="\n\n")

    data = out / "data"
    if (data / "scenes.json").is_file():
        print(f"demo: reusing the generated scenes in {data}")
    else:
        summary = generate_dataset(data, count=args.scenes, size=DEMO_SIZE, seed=DEMO_SEED)
        print(f"demo: generated {summary['scenes']} scenes in {data} ({summary['scenes_per_minute']:.0f} scenes/min)")
    times["data"] = time.perf_counter() - started
    with _timed("tiny", times):
        spd, spgm = _fine_tune("tiny", data, out / "runs", args)
        code = _evaluate(spd, spgm, data, out / "metrics.json")
        if code != 0:
            return code
        model = _export(spd, spgm, out / "export", TINY_EXPORT)
        clip = _clip(out / "clip.mp4", args.clip_frames)
        _matte(model, clip, out)
    live: tuple[Path, Path] | None = None
    if not args.no_live:
        with _timed("live", times):
            live = _live(out / "live", data, args)
    with _timed("bench", times):
        _bench(model, clip, out, args.bench_iters, live)
    print("demo: wall time " + ", ".join(f"{label} {seconds:.0f} s" for label, seconds in times.items()))
    return 0


def _live(folder: Path, data: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The live configuration on the demo scenes: train briefly, export, matte a 720p clip; (export, clip)."""
    spd, spgm = _fine_tune("live", data, folder / "runs", args)
    model = _export(spd, spgm, folder / "export", LIVE_EXPORT)
    clip = _clip(folder / "clip-720p.mp4", args.live_clip_frames, size=LIVE_CLIP_SIZE, fps=LIVE_CLIP_FPS)
    _matte_live(model, clip, folder)
    return model, clip


def _fine_tune(config: str, data: Path, runs: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """SPD then SPGM of ``config``, fine-tuned briefly on the demo scenes from the reference checkpoints
    shipped in spgim/weights (``scripts/train_reference.sh CONFIG``: an hour on generated scenes)."""
    from spgim.reference import reference_checkpoint

    epochs = TUNE_EPOCHS if args.epochs is None else args.epochs
    common = ["--data", str(data), "--config", config, "--workers", str(args.workers), "--epochs", str(epochs)]
    common += ["--max-steps-per-epoch", str(TUNE_STEPS_PER_EPOCH), "--crop", str(TUNE_CROP)]
    start = {branch: reference_checkpoint(branch, config) for branch in ("spd", "spgm")}
    print(f"demo: the {config} model starts from the reference checkpoints {start['spd']}, {start['spgm']}")
    label = "" if config == "tiny" else f"{config} "
    tune_spd = ["--init", str(start["spd"]), "--lr", str(TUNE_LR["spd"])]
    spd = _stage("spd", runs, [*common, *tune_spd], label=label)
    tune_spgm = ["--init", str(start["spgm"]), "--lr", str(TUNE_LR["spgm"])]
    spgm = _stage("spgm", runs, [*common, "--spd", str(spd), *tune_spgm], label=label)
    return spd, spgm


def _matte_live(model: Path, clip: Path, folder: Path) -> None:
    """The 720p clip through the live export (backend auto, the export's working size and keyframe interval)."""
    from spgim.streaming.job import matte_video
    from spgim.streaming.options import Outputs

    outputs = Outputs(composite=folder / "composite.mp4", alpha=folder / "alpha")
    result = matte_video(clip, outputs, model=model, progress=False)
    for note in result.notes:
        print(f"demo: note: {note}")
    print(f"demo: matted {clip} with the live model -> {folder / 'composite.mp4'}")
    print(f"demo: {result.summary_line()}")
    _quality(folder / "alpha", _truth_of(clip), folder / "quality.json")


def _evaluate(spd: Path, spgm: Path, data: Path, out: Path) -> int:
    from spgim.cli import main

    print(f"demo: evaluating {spgm} on {data / 'test'}")
    return main(["eval", "--spd", str(spd), "--spgm", str(spgm), "--data", str(data), "--out", str(out)])


def _export(spd: Path, spgm: Path, folder: Path, options: list[str]) -> Path:
    from spgim.cli import main

    if (folder / "spgim-export.json").is_file():
        print(f"demo: reusing the export in {folder}")
        return folder
    argv = ["export", "--spd", str(spd), "--spgm", str(spgm), "--out", str(folder), *options]
    if main(argv) != 0:
        raise SystemExit(1)
    return folder


def _truth_of(clip: Path) -> Path:
    """Where the clip's true alpha is written: ``clip-alpha.mkv`` beside it (lossless FFV1)."""
    return clip.with_name(f"{clip.stem}-alpha.mkv")


def _clip(path: Path, frames: int, size: tuple[int, int] = CLIP_SIZE, fps: int = 24) -> Path:
    from spgim.train.data.clips import render_clip

    if path.is_file() and _truth_of(path).is_file():
        print(f"demo: reusing the clip {path}")
        return path
    info = render_clip(path, frames=frames, size=size, fps=fps, seed=DEMO_SEED, alpha_path=_truth_of(path))
    width, height = info.size
    print(f"demo: rendered {path} ({info.frames} frames, {width}x{height}, objects: {', '.join(info.objects)})")
    return path


def _matte(model: Path, clip: Path, out: Path) -> None:
    from spgim.streaming.job import matte_video
    from spgim.streaming.options import MattingOptions, Outputs

    outputs = Outputs(
        composite=out / "composite.mp4",
        foreground=out / "foreground.mov",
        alpha=out / "alpha",  # PNGs: lossless, so the quality line scores the model, not an encoder
    )
    result = matte_video(clip, outputs, model=model, matting=MattingOptions(work_size=max(CLIP_SIZE)), progress=False)
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


def _bench(model: Path, clip: Path, out: Path, iters: int, live: tuple[Path, Path] | None = None) -> None:
    """Every backend x precision this machine can run on the export; what it cannot run is listed with its reason.

    With ``live`` (its export and 720p clip), a video row for the live model follows the table; bench.json
    holds it as the second ``video`` row (``"model": "live"``), bench.png shows the tiny model only.
    """
    from spgim.runtime.bench import format_report, run_bench, write_report
    from spgim.runtime.registry import usable_backends
    from spgim.streaming.bench import video_bench
    from spgim.streaming.options import EngineOptions, MattingOptions

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
    engine = EngineOptions(backend="auto", precision="fp32")
    video = video_bench(model, clip, engine, MattingOptions(work_size=max(CLIP_SIZE)), warmup=1, iters=iters)
    report["video"] = [{"model": "tiny", **video}]
    print(format_report(report))
    write_report(report, None, out / "bench.png")
    if live is not None:
        live_model, live_clip = live
        # The export's working size (320) and keyframe interval (8), as `spgim matte` runs it.
        row = video_bench(live_model, live_clip, engine, MattingOptions(), warmup=1, iters=max(iters, 8))
        report["video"].append({"model": "live", **row})
        print(_live_row(row))
    write_report(report, out / "bench.json", None)
    print(f"demo: bench report in {out / 'bench.json'} and {out / 'bench.png'}")


def _live_row(row: dict[str, Any]) -> str:
    """The live model's 720p video row: model-only and end-to-end frames/s, keyframe interval."""
    (width, height), (work_w, work_h) = row["size"], row["work_size"]
    header = f"{'live model, video':<28}{'prec':>5}{'frame':>10}{'work':>9}{'K':>3}{'model fps':>11}{'e2e fps':>9}"
    return (
        f"{header}{'ratio':>7}\n"
        f"{row['engine']:<28}{row['precision']:>5}{f'{width}x{height}':>10}{f'{work_w}x{work_h}':>9}"
        f"{row['keyframe_interval']:>3}{row['model_fps']:>11.2f}{row['end_to_end_fps']:>9.2f}{row['ratio']:>7.2f}"
        f" ({Path(row['clip']).name}, {row['frames']} frames)"
    )


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
    demo.add_argument("--epochs", type=int, help=f"epochs of every fine-tuning stage (default {TUNE_EPOCHS})")
    demo.add_argument("--clip-frames", type=int, default=CLIP_FRAMES, help=f"frames of the demo clip ({CLIP_FRAMES})")
    demo.add_argument("--bench-iters", type=int, default=5, help="timed runs per bench row (default 5)")
    demo.add_argument(
        "--live-clip-frames",
        type=int,
        default=LIVE_CLIP_FRAMES,
        help=f"frames of the 1280x720 clip of the live part ({LIVE_CLIP_FRAMES})",
    )
    demo.add_argument("--no-live", action="store_true", help="skip the live part (and the bench's live row)")
    demo.set_defaults(handler=run_demo)
