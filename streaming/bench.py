"""End-to-end throughput through the streaming pipeline next to model-only throughput (``spgim bench --video``).

Model-only is the backend's own call on a tensor of the clip's working size; end-to-end is the
whole job on the clip: decode, resize, matte, composite, encode H.264 with the audio remuxed.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from spgim.runtime.timing import time_calls
from spgim.sizes import working_size

from .job import matte_video
from .options import EngineOptions, MattingOptions, Outputs, SourceOptions, open_local_matter
from .sources import open_source


def video_bench(
    model_dir: str | Path,
    clip: str | Path,
    engine: EngineOptions,
    matting: MattingOptions,
    *,
    warmup: int = 2,
    iters: int = 10,
    duration: float | None = None,
) -> dict[str, Any]:
    """Frames per second model-only and end-to-end on ``clip`` (its first ``duration`` seconds), and their ratio.

    Model-only runs the keyframe schedule on a still image: with an interval K the mean over whole cycles of
    K frames (SPD once, SPGM K times), so it is the model's share of a frame as the job runs it. End-to-end is
    :func:`~.job.matte_video` with the same engine and matting options, writing an H.264 composite.
    """
    matter = open_local_matter(model_dir, engine, matting)
    source = open_source(str(clip))
    info = source.info
    source.close()
    height, width = (info.width, info.height) if info.rotation % 180 else (info.height, info.width)
    work_h, work_w = working_size(height, width, matter.work_size)
    image = np.random.default_rng(0).random((1, 3, work_h, work_w), dtype=np.float32)
    interval = matter.keyframe_interval
    if interval:
        cycles = max(1, -(-iters // interval))
        samples = time_calls(lambda: matter.scheduler(image), warmup * interval, cycles * interval)
        model_fps = 1.0 / statistics.mean(samples)
        matter.scheduler.reset()
    else:
        samples = time_calls(lambda: matter.scheduler(image), warmup, iters)
        model_fps = 1.0 / statistics.median(samples)
    with tempfile.TemporaryDirectory(prefix="spgim-bench-video-") as folder:
        output = Path(folder) / "composite.mp4"
        result = matte_video(
            clip,
            Outputs(composite=output),
            matter=matter,
            engine=engine,
            reading=SourceOptions(duration=duration),
            progress=False,
        )
    return {
        "clip": str(clip),
        "frames": result.frames_out,
        "size": [info.width, info.height],
        "work_size": [work_w, work_h],
        "backend": engine.backend,
        "engine": matter.backend_name,
        "precision": engine.precision,
        "keyframe_interval": interval,
        "keyframe_ramp": min(matter.scheduler.policy.ramp, interval),
        "upsampling": matter.upsampling,
        "model_fps": model_fps,
        "end_to_end_fps": result.fps,
        "ratio": result.fps / model_fps,
        "wall_s": result.wall_s,
    }
