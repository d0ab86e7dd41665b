"""Stage-by-stage cost of the matting job on one clip: what each stage takes per frame, alone, then all together.

Each stage runs alone over the clip's first ``--frames`` frames and reports wall and CPU milliseconds per frame
(CPU time counts every thread of the process, so on two cores a 30 frames/s job has 66 ms of it per frame):
decode (PyAV, frame threads, to RGB), preprocess (resize to the working size, to float NCHW), model (SPD+SPGM
through the keyframe schedule, as ``spgim matte`` runs it), upsample (the alpha to the frame's size as the job
does it: the guided filter in OpenCV where the export has the graph), composite (cv2 blend on uint8), encode
(libx264 at each ``--presets``, from RGB, as the job writes). Then the whole job (``spgim matte`` on the clip,
its four threads overlapping) gives the frames per second that count. Beside them, the choices behind the
job's defaults against their alternatives: shrinking by halvings vs one area resize, the guided filter in
OpenCV vs bilinear and vs the upsample graph on one thread, RGB to I420 by OpenCV vs swscale.

    .venv/bin/python scripts/pipeline_profile.py --model /tmp/live/model --clip cockatoo.mp4 --json profile.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from spgim.machine import flags_line, machine_facts
from spgim.runtime.matting import shrink
from spgim.runtime.upsampling import cv2_guided_upsampler, open_upsampler, upsampler_artifact
from spgim.sizes import working_size
from spgim.streaming.composite import GREEN, composite
from spgim.streaming.frames import VideoFrame, VideoInfo
from spgim.streaming.job import matte_video
from spgim.streaming.options import (
    LOCAL_ENGINE,
    EncodeOptions,
    EngineOptions,
    MattingOptions,
    Outputs,
    SourceOptions,
    open_local_matter,
)
from spgim.streaming.outputs import open_output


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _measure(run: Callable[[], int]) -> dict[str, float]:
    """Wall and CPU milliseconds per frame of ``run`` (which returns how many frames it did)."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    frames = run()
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    return {"frames": frames, "wall_ms": 1e3 * wall / frames, "cpu_ms": 1e3 * cpu / frames}


def _decode(clip: Path, limit: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == limit:
                break
    return frames


def _encode(frames: list[np.ndarray], preset: str, rate: int) -> int:
    """The job's own composite output (its colour conversion and encoder options) at ``preset``."""
    info = VideoInfo(
        width=frames[0].shape[1], height=frames[0].shape[0], time_base=Fraction(1, rate), rate=Fraction(rate)
    )
    with tempfile.TemporaryDirectory() as folder:
        output = open_output(Path(folder) / "out.mp4", kind="composite", info=info, audio=False, preset=preset)
        try:
            for index, rgb in enumerate(frames):
                output.write(VideoFrame(index=index, rgb=rgb, pts=index, time_base=info.time_base, captured=0.0), rgb)
        finally:
            output.close()
    return len(frames)


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage alone, then the whole job; returns the report."""
    stages: dict[str, dict[str, float]] = {}
    stages["decode"] = _measure(lambda: len(_decode(args.clip, args.frames)))
    frames = _decode(args.clip, args.frames)
    height, width = frames[0].shape[:2]
    engine, matting = EngineOptions.from_args(args), MattingOptions.from_args(args)
    matter = open_local_matter(args.model, engine, matting)
    work_h, work_w = working_size(height, width, matter.work_size)

    def preprocess() -> int:
        for rgb in frames:
            small = shrink(rgb, work_w, work_h)
            np.ascontiguousarray(small.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)
        return len(frames)

    stages["preprocess"] = _measure(preprocess)
    # The choices behind the job's defaults, each against its alternative (not part of the job's sum).
    alternatives: dict[str, dict[str, float]] = {}
    alternatives["shrink_by_halvings"] = _measure(lambda: len([shrink(f, work_w, work_h) for f in frames]))
    alternatives["shrink_direct"] = _measure(
        lambda: len([cv2.resize(f, (work_w, work_h), interpolation=cv2.INTER_AREA) for f in frames])
    )
    images = [
        np.ascontiguousarray(shrink(f, work_w, work_h).transpose(2, 0, 1)[None]).astype(np.float32) / np.float32(255.0)
        for f in frames
    ]
    for image in images[:3]:  # warm-up
        matter.scheduler(image)
    matter.scheduler.reset()
    alphas: list[np.ndarray] = []
    stages["model"] = _measure(lambda: len([alphas.append(matter.scheduler(image)) for image in images]))
    full: list[np.ndarray] = []

    def bilinear(into: list[np.ndarray]) -> int:
        for a in alphas:
            into.append(cv2.resize(a[0, 0], (width, height), interpolation=cv2.INTER_LINEAR))
        return len(alphas)

    upsample = upsampler_artifact(matter.artifacts, matter.spgm_artifact)
    if upsample is None:
        stages["upsample_bilinear"] = _measure(lambda: bilinear([]))
        bilinear(full)
    else:
        filtered = cv2_guided_upsampler(upsample)
        triples = list(zip(alphas, images, frames, strict=True))
        # Timed without keeping the outputs (as the job, which frees each alpha after its composite), then kept.
        stages["upsample_guided_cv2"] = _measure(lambda: len([filtered(a, image, f[None]) for a, image, f in triples]))
        full.extend(filtered(a, image, f[None])[0, 0] for a, image, f in triples)
        alternatives["upsample_bilinear"] = _measure(lambda: bilinear([]))
        guided = open_upsampler(upsample, device="cpu", threads=1)
        alternatives["upsample_guided_graph_1_thread"] = _measure(
            lambda: len([guided(a, image, f[None]) for a, image, f in triples])
        )
    background = np.empty_like(frames[0])
    background[:] = GREEN
    composites: list[np.ndarray] = []
    stages["composite"] = _measure(
        lambda: len([composites.append(composite(f, a, background)) for f, a in zip(frames, full, strict=True)])
    )
    alternatives["rgb_to_i420_opencv"] = _measure(
        lambda: len([cv2.cvtColor(c, cv2.COLOR_RGB2YUV_I420) for c in composites])
    )
    alternatives["rgb_to_i420_swscale"] = _measure(
        lambda: len([av.VideoFrame.from_ndarray(c, format="rgb24").reformat(format="yuv420p") for c in composites])
    )
    for preset in args.presets:
        stages[f"encode_{preset}"] = _measure(lambda preset=preset: _encode(composites, preset, 30))
    with tempfile.TemporaryDirectory() as folder:
        result = matte_video(
            args.clip,
            Outputs(composite=Path(folder) / "composite.mp4"),
            model=args.model,
            engine=engine,
            matting=matting,
            reading=SourceOptions(duration=args.frames / 20.0 if args.duration_from_frames else None),
            encoding=EncodeOptions(preset=args.job_preset),
            progress=False,
            log=lambda message: None,
        )
    return {
        "clip": str(args.clip),
        "size": [width, height],
        "work_size": [work_w, work_h],
        "backend": matter.backend_name,
        "keyframe_interval": matter.keyframe_interval,
        "stages": stages,
        "alternatives": alternatives,
        "job": {
            "frames": result.frames_out,
            "fps": result.fps,
            "wall_s": result.wall_s,
            "summary": result.summary_line(),
        },
        "machine": machine_facts(),
        "cpu_flags_line": flags_line(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="spgim export folder")
    parser.add_argument("--clip", required=True, type=Path, help="a video file (720p for the live target)")
    parser.add_argument("--frames", type=int, default=120, help="frames per stage (default 120)")
    EngineOptions.add_arguments(parser, only=LOCAL_ENGINE)
    MattingOptions.add_arguments(parser)
    parser.add_argument("--job-preset", default="ultrafast", help="x264 preset of the whole job (default ultrafast)")
    parser.add_argument("--presets", default="ultrafast,superfast,veryfast", type=lambda s: s.split(","))
    parser.add_argument("--duration-from-frames", action="store_true", help="job: only --frames frames (20 fps clip)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()
    report = profile(args)
    print(
        f"{report['clip']} {report['size'][0]}x{report['size'][1]} -> {report['work_size'][0]}x{report['work_size'][1]}"
    )
    print(f"backend {report['backend']}, keyframe interval {report['keyframe_interval']}; {report['cpu_flags_line']}")
    print(f"{'stage':<22}{'wall ms/frame':>15}{'CPU ms/frame':>14}")
    for name, row in report["stages"].items():
        print(f"{name:<22}{row['wall_ms']:>15.1f}{row['cpu_ms']:>14.1f}")
    print("alternatives (the job's choice first in each pair):")
    for name, row in report["alternatives"].items():
        print(f"  {name:<32}{row['wall_ms']:>9.1f}{row['cpu_ms']:>9.1f}")
    print(f"whole job: {report['job']['fps']:.1f} frames/s ({report['job']['summary']})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
