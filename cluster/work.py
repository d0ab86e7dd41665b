"""What a batch worker does with one input; plain Python, run inside a Ray task or actor by :mod:`.ray_jobs`.

A recorded input is one job: the outputs are written under hidden temporary names beside their final ones
(``.x.mp4.partial-<id>.mp4``) and renamed when the job finished cleanly, so a final name never holds a
partial file. A job that fails or is interrupted part-way keeps what it wrote, finalised, as
``x.incomplete.mp4`` (the ledger says so) and a later run replaces it. A live input is recorded in numbered
segments (``x.part001.mkv``, ...): when its node is lost, the restarted actor first renames what the lost
attempt wrote (a Matroska segment cut off still plays) and then continues into the next segment.

The model is opened once per worker process and reused for every input that worker runs (its keyframe state
starts again for each), never once per file; frames never travel through Ray, only paths.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError
from spgim.streaming.options import EncodeOptions, EngineOptions, MattingOptions, SourceOptions

from .inputs import BatchInput
from .ledger import Ledger, size_of
from .options import BatchOutputs

PARTIAL = ".partial-"


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to matte one input (paths only: workers read and write shared storage).

    Attributes:
        item: the input.
        folder: the batch's output folder (``--out``), where the ledger is.
        model: the export folder.
        run: this run of the batch (ledger records of other runs are history).
        outputs, engine, matting, reading, encoding: the batch's options, as ``spgim matte`` takes them.
    """

    item: BatchInput
    folder: Path
    model: str
    run: str
    outputs: BatchOutputs
    engine: EngineOptions
    matting: MattingOptions
    reading: SourceOptions
    encoding: EncodeOptions


_OPEN: dict[tuple[Any, ...], Any] = {}  # this worker process's model, by what it was opened with


def worker_matter(model: str, engine: EngineOptions, matting: MattingOptions) -> tuple[Any, bool]:
    """This worker's open model for these options, and whether this call opened it (False: reused)."""
    key = (str(Path(model).resolve()), engine, matting)
    if key in _OPEN:
        return _OPEN[key], False
    from spgim.streaming.options import open_matter

    _OPEN.clear()  # one model per worker: a batch has one
    matter = open_matter(model, engine, matting)
    _OPEN[key] = matter
    return matter, True


def _marker(final: Path) -> str:
    # A folder of frames must keep no extension (that is how a PNG output is told from a video).
    return PARTIAL if final.suffix else "-partial-"


def partial_path(final: Path, token: str) -> Path:
    """The hidden temporary name ``final`` is written under (same folder, same extension)."""
    return final.with_name(f".{final.name}{_marker(final)}{token}{final.suffix}")


def partials_of(final: Path) -> list[Path]:
    """Temporary outputs left for ``final`` by attempts that did not finish."""
    return sorted(final.parent.glob(f".{final.name}{_marker(final)}*"))


def incomplete_path(final: Path) -> Path:
    """Where a job that ended early keeps what it wrote, finalised."""
    if final.suffix:
        return final.with_name(f"{final.stem}.incomplete{final.suffix}")
    return final.with_name(f"{final.name}-incomplete")


def remove(path: Path) -> None:
    """Delete a file or a folder of frames; a missing one is fine."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def move(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` (a folder of frames replaces the old folder)."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(source, target)


def source_stat(source: str) -> list[int] | None:
    """A local input's size and modification time (a failed input that has not changed fails again); None for a
    URL or a missing file."""
    try:
        stat = os.stat(source)
    except (OSError, ValueError):
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _holds_output(path: Path) -> bool:
    return path.exists() and size_of(path) > 0


def _describe(folder: Path, paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {kind: {"path": str(path.relative_to(folder)), "bytes": size_of(path)} for kind, path in paths.items()}


def _begin(spec: JobSpec, node: str, ledger: Ledger) -> tuple[dict[str, Any], int]:
    """Ledger the start of an attempt (and, after a lost one, the retry); the base record and attempt number."""
    base = {"run": spec.run, "key": spec.item.key, "input": spec.item.shown, "node": node, "pid": os.getpid()}
    stat = source_stat(spec.item.source)
    if stat is not None:
        base["source_stat"] = stat
    started = [r for r in ledger.of_run(spec.run, spec.item.key) if r.get("status") == "started"]
    attempt = len(started) + 1
    if started:
        lost = started[-1]
        reason = (
            f"attempt {lost.get('attempt')} on node {str(lost.get('node'))[:12]} ended without a result "
            "(its worker or node was lost)"
        )
        ledger.append({**base, "status": "retried", "attempt": attempt, "reason": reason})
    ledger.append({**base, "status": "started", "attempt": attempt, "started_at": time.time()})
    return base, attempt


def run_file(spec: JobSpec, node: str) -> dict[str, Any]:
    """Matte one recorded input; the ledger's final record for it (done, failed or interrupted)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see spgim.streaming.commands
    ledger = Ledger(spec.folder)
    base, attempt = _begin(spec, node, ledger)
    finals = spec.outputs.paths(spec.item, spec.folder)
    for final in finals.values():
        for leftover in partials_of(final):  # what a lost attempt left
            remove(leftover)
    token = uuid.uuid4().hex[:8]
    temporary = {kind: partial_path(final, token) for kind, final in finals.items()}
    began = time.monotonic()
    record: dict[str, Any] = {**base, "attempt": attempt}
    loaded = False
    try:
        result, loaded, selection = _matte(spec, temporary, spec.reading)
        if loaded:
            record["selection"] = selection  # how the backend was chosen (auto: ranked)
    except SpgimError as error:
        record.update(status="failed", reason=str(error))
        kept = _keep_incomplete(temporary, finals)
        if kept:
            record["incomplete"] = _describe(spec.folder, kept)
    except Exception as error:  # a defect, not the input's fault: said in one line, not retried
        record.update(status="failed", reason=f"internal error: {type(error).__name__}: {error}")
        _keep_incomplete(temporary, finals)
    else:
        record.update(
            frames_in=result.frames_in,
            frames_out=result.frames_out,
            dropped=result.dropped,
            backend=result.backend,
        )
        if result.interrupted:
            record.update(status="interrupted", reason="stopped before the end")
            kept = _keep_incomplete(temporary, finals)
            if kept:
                record["incomplete"] = _describe(spec.folder, kept)
        else:
            for kind, final in finals.items():
                move(temporary[kind], final)
                remove(incomplete_path(final))
            record.update(status="done", outputs=_describe(spec.folder, finals))
            if result.notes:
                record["notes"] = result.notes
    finally:
        for path in temporary.values():
            remove(path)
    seconds = time.monotonic() - began
    record.update(seconds=round(seconds, 3), model_loaded=loaded)
    if record.get("frames_out"):
        record["fps"] = round(record["frames_out"] / seconds, 2) if seconds > 0 else None
    ledger.append(record)
    return record


def _matte(
    spec: JobSpec, outputs: dict[str, Path], reading: SourceOptions, stop: threading.Event | None = None
) -> tuple[Any, bool, str | None]:
    """Run ``spec``'s input into ``outputs`` on this worker's model: the result, whether this call opened the
    model, and how its backend was chosen."""
    from spgim.streaming.job import matte_video

    matter, loaded = worker_matter(spec.model, spec.engine, spec.matting)
    result = matte_video(
        spec.item.source,
        spec.outputs.outputs(outputs),
        matter=matter,
        engine=spec.engine,
        matting=spec.matting,
        reading=reading,
        encoding=spec.encoding,
        progress=False,
        log=lambda line: None,  # the job's notes come back in its result
        stop=stop,
    )
    return result, loaded, getattr(matter, "selection", None)


def _keep_incomplete(temporary: dict[str, Path], finals: dict[str, Path]) -> dict[str, Path]:
    """Move what an unfinished job wrote (finalised by the job) to its ``.incomplete`` name; nothing if empty."""
    kept = {}
    for kind, path in temporary.items():
        if _holds_output(path):
            target = incomplete_path(finals[kind])
            move(path, target)
            kept[kind] = target
    return kept


class StreamWorker:
    """Records one live input in segments; Ray restarts it on another node when its node is lost
    (:mod:`.ray_jobs`), and the restarted worker continues into the next segment."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def stop(self) -> None:
        """End the stream as Ctrl-C ends ``spgim matte``: the open segment is finalised and kept."""
        self._stop.set()

    def run(self, spec: JobSpec, node: str) -> dict[str, Any]:
        """Record ``spec``'s live input until its duration is over or :meth:`stop`; the final ledger record."""
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        ledger = Ledger(spec.folder)
        base, attempt = _begin(spec, node, ledger)
        history = ledger.of_run(spec.run, spec.item.key)
        first = min((r["started_at"] for r in history if isinstance(r.get("started_at"), float)), default=time.time())
        segments = self._salvage(spec, base, ledger) if attempt > 1 else _segments(history)
        if attempt > 1:
            ledger.append({**base, "status": "restarted", "attempt": attempt, "segment": segments + 1})
        record: dict[str, Any] = {**base, "attempt": attempt}
        began = time.monotonic()
        loaded = False
        reading = replace(spec.reading, live=True)
        if spec.reading.duration is not None:
            left = spec.reading.duration - (time.time() - first)
            if left <= 0:
                record.update(status="done", segments=segments, seconds=0.0, model_loaded=False)
                ledger.append(record)
                return record
            reading = replace(reading, duration=left)
        segment = segments + 1
        finals = spec.outputs.paths(spec.item, spec.folder, segment)
        temporary = {kind: partial_path(final, f"a{attempt}") for kind, final in finals.items()}
        try:
            result, loaded, _ = _matte(spec, temporary, reading, self._stop)
        except SpgimError as error:
            record.update(status="failed", reason=str(error))
            result = None
        except Exception as error:
            record.update(status="failed", reason=f"internal error: {type(error).__name__}: {error}")
            result = None
        kept = {kind: path for kind, path in temporary.items() if _holds_output(path)}
        if kept:
            for kind, path in kept.items():
                move(path, finals[kind])
            ledger.append(
                {
                    **base,
                    "status": "segment",
                    "segment": segment,
                    "outputs": _describe(spec.folder, {k: finals[k] for k in kept}),
                    "frames_out": result.frames_out if result else None,
                }
            )
            segments = segment
        for path in temporary.values():
            remove(path)
        if result is not None:
            # A stream without a duration ends when it is stopped: that is done; one stopped before its duration
            # is interrupted.
            early = result.interrupted and spec.reading.duration is not None
            record.update(
                status="interrupted" if early else "done",
                frames_in=result.frames_in,
                frames_out=result.frames_out,
                dropped=result.dropped,
                reconnects=result.reconnects,
            )
        record.update(segments=segments, seconds=round(time.monotonic() - began, 3), model_loaded=loaded)
        ledger.append(record)
        return record

    def _salvage(self, spec: JobSpec, base: dict[str, Any], ledger: Ledger) -> int:
        """Keep what the lost attempts recorded: each partial segment that holds frames becomes its final
        segment; returns the number of the last segment kept."""
        history = ledger.of_run(spec.run, spec.item.key)
        last = _segments(history)
        for number in range(1, last + 2):
            finals = spec.outputs.paths(spec.item, spec.folder, number)
            found = {kind: partials_of(final) for kind, final in finals.items()}
            kept = {}
            for kind, paths in found.items():
                usable = [p for p in paths if _holds_output(p)]
                if usable:
                    move(usable[-1], finals[kind])
                    kept[kind] = finals[kind]
                for path in paths:
                    remove(path)
            if kept:
                described = _describe(spec.folder, kept)
                ledger.append({**base, "status": "segment", "segment": number, "salvaged": True, "outputs": described})
                last = max(last, number)
        return last


def _segments(history: list[dict[str, Any]]) -> int:
    """The highest segment number the ledger has for one input's run (0: none yet)."""
    return max((int(r["segment"]) for r in history if r.get("status") == "segment"), default=0)
