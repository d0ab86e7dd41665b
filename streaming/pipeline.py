"""The matting pipeline: decode -> matte -> composite -> encode, four threads joined by bounded queues.

Bounded queues keep memory flat on long inputs and let the stages overlap (PyAV's decoders and
encoders, ONNX Runtime and numpy release the GIL). In live mode the queue in front of the model
keeps only the newest frames: when the model is slower than the source, the oldest decoded frames
are dropped and counted, so the output never falls behind.

Each stage closes what it uses, in its own thread, when it stops: the decoder the source, the
compositor the background, the writer the outputs (files first, then network destinations, every
one even when another fails), so no container is ever closed while another thread still uses it.
Whatever stops the job (the end, an error, a dropped live source, :meth:`Pipeline.interrupt` on
Ctrl-C or SIGTERM), the writer finishes the files, so what was written plays. A second interrupt
hurries it: network destinations are given :data:`~spgim.streaming.publish.HURRY_S` instead of their
drain time, files are still finished; :data:`ABANDON_S` after that, :meth:`Pipeline.run` returns anyway.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from spgim.errors import SpgimError

from .composite import Background, alpha_u8, composite, composite_on_device, rgba, stored, upright
from .frames import AudioPacket, VideoFrame, VideoInfo
from .sources import Source

_END = object()  # sentinel that flows through every queue at the end of the input
ABANDON_S = 10.0  # after a hurry, how long run() still waits for the writer to finish the outputs
PACED_GAP_S = 1.0  # paced reading never waits longer than this for one frame (a gap in the input's timestamps)
# A recurrent model's state starts again from zeros after a gap between two matted frames longer than these
# frame intervals and seconds both (live frames dropped for a slow model are no gap), or a step back in time.
STATE_GAP_FRAMES = 3
STATE_GAP_S = 0.5


class Output(Protocol):
    """What the writer needs of an output (see :mod:`spgim.streaming.outputs` and :mod:`~spgim.streaming.publish`)."""

    publishes: bool  # a network destination, finished after the files

    def write(self, frame: VideoFrame, image: np.ndarray) -> None: ...
    def write_audio(self, packet: AudioPacket) -> None: ...
    def close(self, hurry: threading.Event | None = None) -> None: ...


MatteFn = Callable[[np.ndarray], np.ndarray]


def timestamp_gap(previous: float | None, current: float | None, rate: Fraction | None) -> bool:
    """Whether two matted frames at ``previous`` and ``current`` seconds are not one stream's neighbours for a
    recurrent model: a step back in time, or one forward longer than :data:`STATE_GAP_FRAMES` intervals of
    ``rate`` (when known) and :data:`STATE_GAP_S`. Untimed frames never make a gap."""
    if previous is None or current is None:
        return False
    limit = max(STATE_GAP_S, STATE_GAP_FRAMES / float(rate)) if rate else STATE_GAP_S
    return not 0 <= current - previous <= limit


@dataclass
class Stats:
    """Counters the stages update and the summary reports."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    latencies: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    first_output: float | None = None  # time.monotonic() when the first frame was written

    def latency(self, q: float) -> float | None:
        """The ``q``-th percentile of capture-to-output latency in seconds, or None before any frame."""
        return float(np.percentile(self.latencies[-10_000:], q)) if self.latencies else None


class LatestQueue:
    """A bounded queue that drops its oldest frame instead of blocking (live mode)."""

    def __init__(self, size: int, on_drop: Callable[[], None]) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(size)
        self.on_drop = on_drop
        self.lock = threading.Lock()

    def put(self, item: Any, stop: threading.Event) -> bool:
        with self.lock:
            while True:
                try:
                    self.queue.put_nowait(item)
                    return True
                except queue.Full:
                    try:
                        self.queue.get_nowait()
                        self.on_drop()
                    except queue.Empty:
                        pass

    def get(self, timeout: float) -> Any:
        return self.queue.get(timeout=timeout)


class BlockingQueue:
    """A bounded queue whose ``put`` waits for room but gives up when the job stops."""

    def __init__(self, size: int) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(size)

    def put(self, item: Any, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> Any:
        return self.queue.get(timeout=timeout)


@dataclass
class Plan:
    """What to make of each frame: the outputs per kind and the background for the composite."""

    outputs: dict[str, list[Output]]  # kind ("composite", "alpha", "foreground") -> outputs
    background: Background | None
    device: str = "cpu"
    batch: int = 1
    duration: float | None = None  # live sources: stop after this many seconds of capture
    paced: bool = False  # read a recorded input no faster than its timestamps (it is published live)
    on_frame: Callable[[VideoFrame, dict[str, np.ndarray]], None] | None = None  # preview, progress
    # A recurrent model's state reset, called with "gap" before a frame after a timestamp_gap (None: stateless).
    reset_state: Callable[[str], None] | None = None


class Pipeline:
    """Runs ``source`` through ``matte`` into the outputs of ``plan``; call :meth:`run` once."""

    def __init__(self, source: Source, matte: MatteFn, plan: Plan, *, queue_size: int = 8) -> None:
        self.source, self.matte, self.plan = source, matte, plan
        self.info: VideoInfo = source.info
        self.stats = Stats()
        self.stop = threading.Event()
        self.hurry = threading.Event()
        self.interrupted = False
        self.errors: list[BaseException] = []
        self.close_errors: list[BaseException] = []
        live = self.info.live
        self.decoded: LatestQueue | BlockingQueue = LatestQueue(2, self._dropped) if live else BlockingQueue(queue_size)
        self.matted = BlockingQueue(queue_size)
        self.encoded = BlockingQueue(queue_size)

    def _dropped(self) -> None:
        self.stats.dropped += 1

    def interrupt(self) -> None:
        """Stop the job (Ctrl-C, SIGTERM); a second call hurries the outputs' finishing. Safe from a signal handler."""
        if self.interrupted:
            self.hurry.set()
        self.interrupted = True
        self.stop.set()

    def run(self) -> Stats:
        """Run to the end of the input, an error or :meth:`interrupt`, until the writer has finished the outputs.

        Owns the source, the background and the outputs from here on: each stage closes what it uses.

        Raises:
            SpgimError: the first error of a stage (else of finishing an output), after the outputs are finished.
        """
        stages = [
            threading.Thread(target=self._guard, args=(self._read,), name="spgim-decode", daemon=True),
            threading.Thread(target=self._guard, args=(self._infer,), name="spgim-matte", daemon=True),
            threading.Thread(target=self._guard, args=(self._composite,), name="spgim-composite", daemon=True),
            threading.Thread(target=self._guard, args=(self._write,), name="spgim-encode", daemon=True),
        ]
        for stage in stages:
            stage.start()
        writer, hurried = stages[-1], None
        while writer.is_alive():
            try:
                writer.join(0.1)
            except KeyboardInterrupt:  # no handler installed by the caller: Ctrl-C arrives as an exception
                self.interrupt()
            if self.hurry.is_set():
                hurried = hurried or time.monotonic()
                if time.monotonic() - hurried > ABANDON_S:
                    self.close_errors.append(SpgimError("the outputs could not be finished in time; abandoned"))
                    break
        self.stop.set()
        self.stats.finished = time.monotonic()
        # The other stages see the stop within a model call or a network read; a process that exits while
        # an engine's thread is mid-call aborts ("terminate called without an active exception").
        deadline = time.monotonic() + ABANDON_S
        for stage in stages[:-1]:
            stage.join(max(0.0, deadline - time.monotonic()))
        errors = self.errors or self.close_errors
        if errors:
            error = errors[0]
            if isinstance(error, SpgimError):
                raise error
            raise SpgimError(f"matting stopped: {type(error).__name__}: {str(error)[:200]}") from None
        return self.stats

    def _guard(self, stage: Callable[[], None]) -> None:
        try:
            stage()
        except BaseException as error:  # reported by run() in the caller's thread, as one line
            self.errors.append(error)
            self.stop.set()

    def _get(self, source: LatestQueue | BlockingQueue) -> Any:
        while not self.stop.is_set():
            try:
                return source.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def _read(self) -> None:
        origin: tuple[float, float] | None = None  # (clock, frame time) the pace is measured from
        previous: float | None = None  # the last frame's time, when paced
        items = self.source.items(self.stop)
        try:
            for item in items:
                if isinstance(item, VideoFrame):
                    if self.plan.paced and item.time is not None:
                        # A jump in the input's timestamps (back, or forward by more than PACED_GAP_S) is not
                        # waited through: the pace starts again from this frame.
                        if origin is None or previous is None or not 0 <= item.time - previous <= PACED_GAP_S:
                            origin = (time.monotonic(), item.time)
                        previous = item.time
                        wait = origin[0] + (item.time - origin[1]) - time.monotonic()
                        if wait > 0 and self.stop.wait(wait):
                            return
                    duration = self.plan.duration
                    if self.info.live and duration is not None and (item.time or 0.0) >= duration:
                        break
                    self.stats.frames_in += 1
                if not self.decoded.put(item, self.stop):
                    return
        finally:
            self.decoded.put(_END, self.stop)
            try:
                getattr(items, "close", lambda: None)()  # a generator: run its cleanup before the source goes
            finally:
                self.source.close()

    def _infer(self) -> None:
        rotation = self.info.rotation
        pending: list[VideoFrame] = []
        last: float | None = None  # the last matted frame's time
        while True:
            item = self._get(self.decoded)
            if isinstance(item, VideoFrame):
                pending.append(item)
                if len(pending) < self.plan.batch and not self.info.live:
                    continue
            for gap, run in self._runs(pending, last):
                if gap and self.plan.reset_state is not None:
                    self.plan.reset_state("gap")
                images = np.stack([upright(frame.rgb, rotation) for frame in run])
                for frame, alpha in zip(run, self.matte(images), strict=True):
                    frame.alpha = stored(alpha, rotation)
                    if not self.matted.put(frame, self.stop):
                        return
                last = next((frame.time for frame in reversed(run) if frame.time is not None), last)
            pending = []
            if item is _END:
                self.matted.put(_END, self.stop)
                return
            if isinstance(item, AudioPacket) and not self.matted.put(item, self.stop):
                return

    def _runs(self, frames: list[VideoFrame], last: float | None) -> list[tuple[bool, list[VideoFrame]]]:
        """``frames`` split at every :func:`timestamp_gap` (``last``: the previous matted frame's time), each run
        with whether a gap comes before it; one run, gapless, where the model has no state to reset."""
        if self.plan.reset_state is None:
            return [(False, frames)] if frames else []
        runs: list[tuple[bool, list[VideoFrame]]] = []
        for frame in frames:
            if timestamp_gap(last, frame.time, self.info.rate):
                runs.append((True, []))
            elif not runs:
                runs.append((False, []))
            runs[-1][1].append(frame)
            last = frame.time if frame.time is not None else last
        return runs

    def _composite(self) -> None:
        try:
            self._composite_frames()
        finally:
            if self.plan.background is not None:
                self.plan.background.close()

    def _composite_frames(self) -> None:
        outputs, background = self.plan.outputs, self.plan.background
        while True:
            item = self._get(self.matted)
            if isinstance(item, VideoFrame):
                assert item.alpha is not None
                images: dict[str, np.ndarray] = {}
                alpha8 = alpha_u8(item.alpha) if "alpha" in outputs or "foreground" in outputs else None
                if background is not None:
                    back = background.next()
                    if self.plan.device.startswith("cuda"):
                        images["composite"] = composite_on_device(item.rgb, item.alpha, back, self.plan.device)
                    else:
                        images["composite"] = composite(item.rgb, item.alpha, back)
                if alpha8 is not None:
                    images["alpha"] = alpha8
                    if "foreground" in outputs:
                        images["foreground"] = rgba(item.rgb, alpha8)
                item = (item, images)
            if not self.encoded.put(item, self.stop) or item is _END:
                return

    def _write(self) -> None:
        try:
            self._write_frames()
        finally:
            self.close_errors += close_outputs(self.plan.outputs, self.hurry)

    def _write_frames(self) -> None:
        outputs, on_frame = self.plan.outputs, self.plan.on_frame
        while True:
            item = self._get(self.encoded)
            if item is _END:
                return
            if isinstance(item, AudioPacket):
                for kind in ("composite", "foreground"):
                    for output in outputs.get(kind, []):
                        output.write_audio(item)
                continue
            frame, images = item
            for kind, targets in outputs.items():
                for output in targets:
                    output.write(frame, images[kind])
            self.stats.frames_out += 1
            now = time.monotonic()
            if self.stats.first_output is None:
                self.stats.first_output = now
            self.stats.latencies.append(now - frame.captured)
            if on_frame is not None:
                on_frame(frame, images)


def close_outputs(outputs: dict[str, list[Output]], hurry: threading.Event | None = None) -> list[BaseException]:
    """Close every output, files first, then network destinations; returns the errors, in order.

    Every output is closed even when another fails: one full disk must not leave the other files unfinished.
    """
    errors: list[BaseException] = []
    everything = [output for targets in outputs.values() for output in targets]
    for output in sorted(everything, key=lambda output: getattr(output, "publishes", False)):
        try:
            output.close(hurry)
        except Exception as error:
            errors.append(error)
    return errors
