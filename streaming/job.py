"""``matte_video``: one call from an input (file, folder, URL, webcam) to finalised output files.

The Python face of ``spgim matte``: the same options, as the dataclasses of :mod:`.options`. Outputs
are opened before the first frame (an unwritable path fails at once); from then on the pipeline's writer
thread finishes them (see :mod:`.pipeline`), files first, so that after the end, an error, a dropped live
source, Ctrl-C or SIGTERM, what was written plays. Ctrl-C and SIGTERM stop the job; a second one hurries it
(network destinations are abandoned, files are still finished), so a container manager's grace period is
spent on the recording. With a preview (:mod:`.preview`) the job serves a live page of its frames and figures
while it runs, and closes it when it ends.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spgim.errors import SpgimError

from .composite import Background
from .frames import VideoFrame
from .options import (
    EncodeOptions,
    EngineOptions,
    MattingOptions,
    Outputs,
    PreviewOptions,
    SourceOptions,
    open_matter,
)
from .pipeline import Output, Pipeline, Plan, close_outputs
from .remote import TritonMatter
from .sources import Source, open_source
from .urls import redact

if TYPE_CHECKING:
    from .frames import VideoInfo
    from .preview import PreviewServer

LIVE_REPORT_EVERY_S = 10.0
STOP_POLL_S = 0.2  # how often a job looks at its stop event


@dataclass
class MatteResult:
    """What a matting job did."""

    source: str
    backend: str
    frames_in: int
    frames_out: int
    dropped: int
    corrupt: int
    reconnects: int
    wall_s: float
    latency_p50_s: float | None
    latency_p90_s: float | None
    live: bool
    interrupted: bool = False
    error: str | None = None
    keyframe_interval: int = 0
    keyframes: int | None = None  # frames SPD ran on, when a keyframe interval is set
    keyframe_ramp: int = 0  # frames a keyframe's correction is phased in over (0: switched at once)
    startup_s: float | None = None  # call to first frame written (model loading, opening the source included)
    server_p50_s: float | None = None  # with --server: a frame's round trip to the server, median
    server_p90_s: float | None = None  # ... and 90th percentile
    outputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Frames written per second of wall time."""
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    def summary_line(self) -> str:
        """The final one-line summary."""
        line = (
            f"{self.frames_in} frames in, {self.frames_out} out, {self.dropped} dropped, "
            f"{self.corrupt} corrupt skipped, "
            f"{self.fps:.2f} fps, {self.wall_s:.1f} s wall, backend {self.backend}"
        )
        if self.keyframe_interval and self.keyframes is not None:
            ramp = f", ramp {self.keyframe_ramp}" if self.keyframe_ramp > 1 else ""
            line += f", SPD on {self.keyframes} keyframes (interval {self.keyframe_interval}{ramp})"
        if self.live and self.latency_p50_s is not None and self.latency_p90_s is not None:
            line += f", latency p50 {self.latency_p50_s * 1e3:.0f} ms p90 {self.latency_p90_s * 1e3:.0f} ms"
            line += f", {self.reconnects} reconnects"
            if self.startup_s is not None:
                line += f", first frame after {self.startup_s:.2f} s"
        if self.server_p50_s is not None and self.server_p90_s is not None:
            line += f", server round trip p50 {self.server_p50_s * 1e3:.0f} ms p90 {self.server_p90_s * 1e3:.0f} ms"
        return line

    def figures(self) -> dict[str, Any]:
        """Every field, the frames per second and the summary line, as JSON takes them (the preview page's)."""
        return {**asdict(self), "fps": self.fps, "summary": self.summary_line()}


def _stderr(message: str) -> None:
    print(f"spgim matte: {message}", file=sys.stderr, flush=True)


@contextmanager
def _signals_interrupt(pipeline: Pipeline, stop: threading.Event | None = None) -> Iterator[None]:
    """Ctrl-C and SIGTERM call :meth:`Pipeline.interrupt` while it runs (only the main thread may install handlers),
    and so does ``stop`` being set from another thread.

    The handlers raise nothing: an exception could land in the middle of finishing a file.
    """
    finished = threading.Event()
    if stop is not None:

        def watch() -> None:
            while not finished.is_set():
                if stop.wait(STOP_POLL_S):
                    pipeline.interrupt()
                    return

        threading.Thread(target=watch, name="spgim-stop", daemon=True).start()
    try:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def interrupt(signum: int, frame: Any) -> None:
            pipeline.interrupt()

        previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
    finally:
        finished.set()


def matte_video(
    source: str | Path,
    outputs: Outputs,
    *,
    model: str | Path | None = None,
    matter: Callable[[np.ndarray], np.ndarray] | None = None,
    engine: EngineOptions | None = None,
    matting: MattingOptions | None = None,
    reading: SourceOptions | None = None,
    encoding: EncodeOptions | None = None,
    preview: PreviewOptions | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
    stop: threading.Event | None = None,
) -> MatteResult:
    """Matte ``source`` with the exported model in ``model`` (or on the ``spgim serve`` of ``engine.server``)
    into ``outputs``.

    Args:
        source: a media file, an image folder or pattern, a network URL, or a webcam index ("0").
        outputs: the composite (one or several), the alpha and the foreground to write, and the composite's
            background; a composite or alpha may go to rtmp://, rtsp://, srt:// or udp:// URLs: published live
            (see :mod:`spgim.streaming.publish`), a recorded input then read at its own pace.
        model: an ``spgim export`` folder (or pass ``matter``: any callable ``uint8 (N,H,W,3) -> alpha``, or a
            :class:`~spgim.runtime.matting.Matter` already open, as a batch worker reuses one: its keyframe state
            starts again for this input).
        engine: which engine runs the model, its threads, and frames per call (``batch`` applies to ``matter`` too);
            ``server``: the model runs on that ``spgim serve`` instead (``model`` then None; see
            :mod:`spgim.streaming.remote`), its sequence ended when the job ends, error or not.
        matting: working size, keyframes, smoothing and upsampling; None values are the export's.
        reading: live or not, the part of a file to matte, and a live source's reconnects and time-outs.
        encoding: codec, quality and encoder preset of the outputs.
        preview: where to serve a live page of the composite, input, alpha and figures while the job runs
            (:mod:`spgim.streaming.preview`; None or no address: no page); it is bound before the model loads and
            closed when the job ends.
        progress: a progress bar for recorded input on a terminal.
        log: where notes and live reports go (default: stderr).
        stop: set from another thread to end the job as Ctrl-C does (a batch worker stopping a live stream).

    Returns:
        The counts, timing and notes; ``interrupted`` is set after Ctrl-C or SIGTERM.

    Raises:
        SpgimError: bad input, model, options or output, or a failure mid-job (outputs are finalised first).
    """
    engine = engine or EngineOptions()
    matting = matting or MattingOptions()
    reading = reading or SourceOptions()
    encoding = encoding or EncodeOptions()
    wanted = outputs.by_kind()
    called = time.monotonic()
    page = _open_page(preview, log)  # before the model loads: a port in use is refused at once
    device = "cpu"
    backend_name = "custom"
    scheduler = None
    remote: Any = None  # the client of --server, closed (its sequence ended) when the job ends
    try:
        if matter is None:
            runtime = open_matter(model, engine, matting, log=log)
            matter, backend_name, device = runtime, runtime.backend_name, getattr(runtime, "device", "cpu")
            if isinstance(runtime, TritonMatter):
                remote = runtime
            else:
                scheduler = runtime.scheduler
                if engine.backend == "auto" or engine.precision == "auto":
                    log(runtime.selection)
        elif callable(getattr(getattr(matter, "scheduler", None), "restart", None)):  # a Matter reused for this input
            scheduler = getattr(matter, "scheduler")  # noqa: B009 (matter is typed as any callable)
            scheduler.restart()
            backend_name, device = getattr(matter, "backend_name", "custom"), getattr(matter, "device", "cpu")
        return _run_job(
            source,
            outputs,
            matter,
            wanted,
            engine,
            reading,
            encoding,
            page,
            progress,
            log,
            stop,
            called=called,
            device=device,
            backend_name=backend_name,
            scheduler=scheduler,
            remote=remote,
        )
    finally:
        if remote is not None:
            remote.close()
        if page is not None:
            page.close()


def _open_page(preview: PreviewOptions | None, log: Callable[[str], None]) -> PreviewServer | None:
    """The preview server ``preview`` asks for, listening (None: no page); its URL is logged."""
    if preview is None or preview.address is None:
        return None
    from .preview import PreviewServer

    page = PreviewServer(preview.address)
    log(f"preview on {page.url}")
    return page


def _run_job(
    source: str | Path,
    outputs: Outputs,
    matter: Callable[[np.ndarray], np.ndarray],
    wanted: dict[str, list[Any]],
    engine: EngineOptions,
    reading: SourceOptions,
    encoding: EncodeOptions,
    page: PreviewServer | None,
    progress: bool,
    log: Callable[[str], None],
    stop: threading.Event | None,
    *,
    called: float,
    device: str,
    backend_name: str,
    scheduler: Any,
    remote: Any,
) -> MatteResult:
    """:func:`matte_video` once its matter is open: the source, the outputs and the pipeline."""
    from .outputs import open_output
    from .publish import PublishedStream, is_destination

    spec = str(source)
    opened = open_source(
        spec,
        live=reading.live,
        start=reading.start,
        duration=reading.duration,
        max_reconnects=reading.reconnects,
        stall_timeout=reading.stall_timeout,
        startup_timeout=reading.startup_timeout,
        rtsp_transport=reading.rtsp_transport,
        log=log,
    )
    info = opened.info
    opened_outputs: dict[str, list[Output]] = {}
    notes: list[str] = []
    back: Background | None = None
    pipeline: Pipeline | None = None
    try:
        alone = sum(len(paths) for paths in wanted.values()) == 1
        for kind, paths in wanted.items():
            opened_outputs[kind] = []
            for path in paths:
                if is_destination(path):
                    published = PublishedStream(
                        str(path),
                        kind,
                        info,
                        quality=encoding.quality,
                        preset=encoding.preset,
                        rtsp_transport=reading.rtsp_transport,
                        max_reconnects=reading.reconnects,
                        required=alone,
                        log=log,
                    )
                    opened_outputs[kind].append(published)
                else:
                    opened_outputs[kind].append(
                        open_output(
                            path,
                            kind=kind,
                            info=info,
                            codec=encoding.codec,
                            quality=encoding.quality,
                            preset=encoding.preset,
                        )
                    )
        if "composite" in opened_outputs:
            back = Background(outputs.background, info.width, info.height, info.rotation)
        bar = _progress_bar(info.frames, enabled=progress and not info.live)
        reporter = _LiveReporter(log) if info.live else None

        def on_frame(frame: VideoFrame, images: dict[str, np.ndarray]) -> None:
            if bar is not None:
                bar.update(1)
            if reporter is not None and pipeline is not None:
                reporter.tick(pipeline)
            if page is not None:
                page.show(frame, images)

        live_duration = reading.duration if info.live else None
        # A recorded input published live is read at its own pace, as ffmpeg -re does.
        paced = not info.live and any(is_destination(path) for paths in wanted.values() for path in paths)
        plan = Plan(
            opened_outputs,
            back,
            device=device,
            batch=engine.batch,
            duration=live_duration,
            on_frame=on_frame,
            paced=paced,
            # A recurrent model's state starts again after a gap in the frames' timestamps (a reconnect, a seek).
            reset_state=scheduler.reset_state if getattr(scheduler, "recurrent", False) else None,
        )
        pipeline = Pipeline(opened, matter, plan)
        if page is not None:
            running = pipeline
            page.follow(
                lambda: _measured(running, opened, info, backend_name, called, scheduler, remote).figures(),
                rotation=info.rotation,
            )
        error = None
        try:
            with _signals_interrupt(pipeline, stop):
                pipeline.run()  # from here on the pipeline's threads close the source, background and outputs
        except SpgimError as failure:
            error = failure
        finally:
            if bar is not None:
                bar.close()
    finally:
        if pipeline is None:  # set-up failed: nothing else uses what was opened
            opened.close()
            if back is not None:
                back.close()
            close_outputs(opened_outputs)
        for targets in opened_outputs.values():
            for target in targets:
                notes.extend(getattr(target, "notes", []))
    result = _measured(pipeline, opened, info, backend_name, called, scheduler, remote)
    result.error = str(error) if error else None
    result.outputs = [redact(str(path)) for paths in wanted.values() for path in paths]
    result.notes = notes
    if error is not None:
        log(f"{result.frames_out} frames written before the error; outputs finalised")
        raise error
    return result


def _measured(
    pipeline: Pipeline,
    opened: Source,
    info: VideoInfo,
    backend_name: str,
    called: float,
    scheduler: Any,
    remote: Any,
) -> MatteResult:
    """The job's counts and timing: so far while it runs (the preview page's figures), or at its end."""
    stats = pipeline.stats
    result = MatteResult(
        source=info.description,
        backend=backend_name,
        frames_in=stats.frames_in,
        frames_out=stats.frames_out,
        dropped=stats.dropped,
        corrupt=opened.corrupt,
        reconnects=opened.reconnects,
        wall_s=(stats.finished or time.monotonic()) - stats.started,
        latency_p50_s=stats.latency(50),
        latency_p90_s=stats.latency(90),
        live=info.live,
        interrupted=pipeline.interrupted,
        startup_s=None if stats.first_output is None else stats.first_output - called,
    )
    if remote is not None:
        result.server_p50_s, result.server_p90_s = remote.round_trip(50), remote.round_trip(90)
        if remote.keyframe_interval:
            result.keyframe_interval, result.keyframes = remote.keyframe_interval, remote.keyframes
    if scheduler is not None:
        result.keyframe_interval = scheduler.policy.interval
        result.keyframe_ramp = min(scheduler.policy.ramp, scheduler.policy.interval)
        result.keyframes = len(scheduler.stats.keyframes)
    return result


class _LiveReporter:
    """Latency and drops every ``LIVE_REPORT_EVERY_S`` seconds while a live job runs."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.last = time.monotonic()

    def tick(self, pipeline: Pipeline) -> None:
        now = time.monotonic()
        if now - self.last < LIVE_REPORT_EVERY_S:
            return
        self.last = now
        stats = pipeline.stats
        p50, p90 = stats.latency(50), stats.latency(90)
        if p50 is not None and p90 is not None:
            self.log(
                f"live: {stats.frames_out} frames out, {stats.dropped} dropped, "
                f"latency p50 {p50 * 1e3:.0f} ms p90 {p90 * 1e3:.0f} ms"
            )


def _progress_bar(total: int, *, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, unit="frame", desc="matte", dynamic_ncols=True)
