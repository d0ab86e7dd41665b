"""``spgim batch``'s driver: many inputs, one Ray job each, a ledger, a progress bar and a summary.

:func:`run_batch` expands the inputs, skips those a previous run finished (``--resume``, the default), starts
or joins Ray, submits one task per recorded input and one actor per live input, reports each as it finishes,
and on Ctrl-C stops them all with their outputs finalised. Temporary outputs of jobs that never finished are
removed at the end; the ledger (:mod:`.ledger`) keeps the whole history.
"""

from __future__ import annotations

import contextlib
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError
from spgim.streaming.options import EncodeOptions, EngineOptions, MattingOptions, SourceOptions

from .inputs import BatchInput, collect_inputs
from .ledger import Ledger, outputs_in_place
from .options import BatchOutputs, ClusterOptions
from .ray_jobs import import_ray
from .work import JobSpec, partials_of, remove, source_stat

WAIT_S = 0.5  # how often the driver looks for finished jobs (and redraws the progress bar)
STOP_WAIT_S = 60.0  # after Ctrl-C, how long the driver waits for jobs to finalise their outputs
RESUBMIT_S = 1.0  # a live input whose actor is unavailable is called again this often
UNAVAILABLE_S = 300.0  # ... for at most this long (Ray declares a lost node dead within about a minute)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class BatchSummary:
    """What a batch did.

    Attributes:
        total: inputs named.
        skipped: inputs already done by an earlier run (``--resume``).
        done, failed, interrupted: inputs by how this run (or, for skipped ones, the last run) ended them;
            ``failed`` maps each failed input to its one-line reason.
        retried: inputs run more than once in this run because a worker or node was lost.
        frames: frames written in this run.
        seconds: wall time of this run.
        run: this run's id in the ledger.
    """

    total: int = 0
    skipped: int = 0
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    run: str = ""

    @property
    def fps(self) -> float:
        """Frames written per second of wall time, all jobs together."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0: every input done; 130: stopped; 1: any input failed."""
        if self.interrupted:
            return 130
        return 1 if self.failed else 0

    def table(self) -> str:
        """The summary as a few aligned lines."""
        rows = [
            ("inputs", str(self.total)),
            ("done", f"{len(self.done)} ({self.skipped} already done before this run)"),
            ("failed", str(len(self.failed))),
            ("retried", str(len(self.retried))),
            ("interrupted", str(len(self.interrupted))),
            ("frames", f"{self.frames} in {self.seconds:.1f} s, {self.fps:.1f} frames/s"),
        ]
        lines = [f"  {name:<12}{value}" for name, value in rows]
        lines += [f"  failed: {name}: {reason}" for name, reason in self.failed.items()]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        return {
            "run": self.run,
            "total": self.total,
            "skipped": self.skipped,
            "done": self.done,
            "failed": self.failed,
            "interrupted": self.interrupted,
            "retried": self.retried,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.fps, 2),
        }


def run_batch(
    inputs: list[str],
    model: str | Path,
    out: str | Path,
    *,
    outputs: BatchOutputs | None = None,
    engine: EngineOptions | None = None,
    matting: MattingOptions | None = None,
    reading: SourceOptions | None = None,
    encoding: EncodeOptions | None = None,
    cluster: ClusterOptions | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> BatchSummary:
    """Matte every input into ``out`` on Ray, one job per input.

    Args:
        inputs: files, folders, globs, lists of paths/URLs (``.txt``), network URLs or webcam indices.
        model: the export folder every worker opens (shared storage on a cluster).
        out: the output folder (shared storage on a cluster); the ledger ``spgim-batch.jsonl`` lives here.
        outputs: which outputs each input gets, and the composite's background.
        engine, matting, reading, encoding: as for :func:`spgim.streaming.job.matte_video`; ``engine.threads``
            0 gives the model the job's CPUs.
        cluster: where the batch runs (a local Ray by default), CPUs per job, retries, resume.
        progress: a progress bar on a terminal.
        log: where the per-input lines and notes go.

    Returns:
        The summary; its :attr:`~BatchSummary.exit_code` is the command's.

    Raises:
        SpgimError: bad inputs, options or model folder, or no Ray.
    """
    from spgim.runtime.artifacts import load_artifacts
    from spgim.runtime.upsampling import check_upsampling

    outputs = outputs or BatchOutputs()
    engine = engine or EngineOptions()
    matting = matting or MattingOptions()
    cluster = cluster or ClusterOptions()
    check_upsampling(matting.upsampling)  # every option before the inputs, the model and Ray
    import_ray()  # a missing Ray is one line before anything else
    items = collect_inputs(inputs)
    load_artifacts(model)  # a bad model folder is one line here, not one failure per input
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SpgimError(f"cannot make the output folder {folder}: {error.strerror or error}") from None
    folder = folder.resolve()
    ledger = Ledger(folder)
    summary = BatchSummary(total=len(items), run=uuid.uuid4().hex[:12])
    latest = ledger.latest()
    todo = []
    for item in items:
        last = latest.get(item.key)
        settled = None if cluster.rerun or last is None or item.live else _settled(item, last, folder)
        if settled == "done":
            summary.skipped += 1
            summary.done.append(item.shown)
        elif settled == "failed":
            summary.failed[item.shown] = f"{last['reason']} (unchanged since it failed)"  # type: ignore[index]
        else:
            todo.append(item)
    if summary.skipped or summary.failed:
        log(
            f"spgim batch: {summary.skipped} of {len(items)} inputs already done, {len(summary.failed)} failed and "
            "unchanged since (--no-resume runs them again)"
        )
    if engine.threads == 0:
        engine = EngineOptions(
            backend=engine.backend, precision=engine.precision, threads=cluster.cpus_per_job, batch=engine.batch
        )
    specs = [
        JobSpec(
            item=item,
            folder=folder,
            model=str(Path(model).resolve()),
            run=summary.run,
            outputs=outputs,
            engine=engine,
            matting=matting,
            reading=reading or SourceOptions(),
            encoding=encoding or EncodeOptions(),
        )
        for item in todo
    ]
    began = time.monotonic()
    if specs:
        _run_on_ray(specs, cluster, summary, ledger, progress=progress, log=log)
    summary.seconds = time.monotonic() - began
    summary.retried = sorted(
        {str(r.get("input")) for r in ledger.records() if r.get("run") == summary.run and r.get("status") == "retried"}
    )
    return summary


def _settled(item: BatchInput, last: dict[str, Any], folder: Path) -> str | None:
    """``"done"`` where the last run finished the input and its outputs are in place; ``"failed"`` where the input
    itself was at fault and the file has not changed since; None where it must run."""
    if last.get("status") == "done":
        return "done" if outputs_in_place(folder, last) else None
    if last.get("status") == "failed" and last.get("source_stat") is not None:
        return "failed" if last["source_stat"] == source_stat(item.source) else None
    return None


@dataclass
class _Job:
    """One submitted input: its spec, and for a live input its actor and how often its run was resubmitted."""

    spec: JobSpec
    actor: Any = None
    resubmits: int = 0
    unavailable_since: float | None = None


def _run_on_ray(
    specs: list[JobSpec],
    cluster: ClusterOptions,
    summary: BatchSummary,
    ledger: Ledger,
    *,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    from . import ray_jobs

    ray, started = ray_jobs.connect(cluster.ray, cluster.cpus_per_job)
    pending: dict[Any, _Job] = {}
    bar = _progress_bar(len(specs), enabled=progress)
    waiter = _Waiter(ray, pending, summary, ledger, bar, log, cluster.retries)
    try:
        for spec in specs:
            if spec.item.live:
                actor, ref = ray_jobs.submit_stream(ray, spec, cluster.cpus_per_job, cluster.retries)
                pending[ref] = _Job(spec, actor)
            else:
                pending[ray_jobs.submit_file(ray, spec, cluster.cpus_per_job, cluster.retries)] = _Job(spec)
        try:
            waiter.collect()
        except KeyboardInterrupt:
            log(f"spgim batch: stopping {len(pending)} jobs; their outputs are finalised (up to {STOP_WAIT_S:.0f} s)")
            waiter.stopping = True
            for ref, job in pending.items():
                if job.actor is not None:
                    job.actor.stop.remote()
                else:
                    ray.cancel(ref)
            with contextlib.suppress(KeyboardInterrupt):
                waiter.collect(until=time.monotonic() + STOP_WAIT_S)
            summary.interrupted.extend(job.spec.item.shown for job in pending.values())  # no answer in time
    finally:
        if bar is not None:
            bar.close()
        _remove_partials(specs)
        if started:
            ray_jobs.disconnect(ray)


def _remove_partials(specs: list[JobSpec]) -> None:
    """Delete the temporary outputs of attempts that never finished (a lost worker's)."""
    for spec in specs:
        for final in spec.outputs.paths(spec.item, spec.folder).values():
            for leftover in partials_of(final):
                remove(leftover)
        if spec.item.live:
            for number in range(1, 1000):
                finals = spec.outputs.paths(spec.item, spec.folder, number).values()
                leftovers = [p for final in finals for p in partials_of(final)]
                for leftover in leftovers:
                    remove(leftover)
                if not leftovers and not any(final.exists() for final in finals):
                    break


@dataclass
class _Waiter:
    """Waits for submitted jobs and records each as it ends."""

    ray: Any
    pending: dict[Any, _Job]
    summary: BatchSummary
    ledger: Ledger
    bar: Any
    log: Callable[[str], None]
    retries: int
    stopping: bool = False
    began: float = field(default_factory=time.monotonic)
    later: list[tuple[float, _Job]] = field(default_factory=list)  # live runs to call again, and when

    def collect(self, until: float | None = None) -> None:
        """Wait for the pending jobs (until ``until``, if given)."""
        while (self.pending or self.later) and (until is None or time.monotonic() < until):
            now = time.monotonic()
            for due, job in [item for item in self.later if item[0] <= now]:
                self.later.remove((due, job))
                self.pending[job.actor.run_here.remote(job.spec)] = job
            if not self.pending:
                time.sleep(WAIT_S)
                continue
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=WAIT_S)
            for ref in ready:
                self._finished(ref, self.pending.pop(ref))
            if self.bar is not None:
                elapsed = time.monotonic() - self.began
                rate = self.summary.frames / elapsed if elapsed else 0.0
                self.bar.set_postfix_str(f"{rate:.1f} frames/s", refresh=True)

    def _finished(self, ref: Any, job: _Job) -> None:
        from .ray_jobs import lost_reason

        spec = job.spec
        try:
            record = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError as error:
            # A live input's actor lost with its node: Ray fails the running call and, once it sees the node dead,
            # restarts the actor elsewhere (max_restarts). The call is made again until the restarted actor takes
            # it, or Ray says the actor is dead for good (ActorDiedError: its restarts are spent).
            now = time.monotonic()
            job.unavailable_since = job.unavailable_since or now
            if not self.stopping and now - job.unavailable_since < UNAVAILABLE_S:
                if not job.resubmits:
                    self.log(f"spgim batch: {spec.item.shown}: its worker was lost; it continues where Ray restarts it")
                job.resubmits += 1
                self.later.append((now + RESUBMIT_S, job))
                return
            record = self._lost(spec, error, lost_reason)
        except Exception as error:
            # Stopping: cancelled by Ctrl-C before it ran (a running job returns its own record). Otherwise Ray
            # gave up: the worker or node was lost more than --retries times.
            record = self._stopped(spec) if self.stopping else self._lost(spec, error, lost_reason)
        _account(record, spec.item, self.summary, self.log)
        if self.bar is not None:
            self.bar.update(1)

    def _stopped(self, spec: JobSpec) -> dict[str, Any]:
        record = {
            "run": spec.run,
            "key": spec.item.key,
            "input": spec.item.shown,
            "status": "interrupted",
            "reason": "stopped before it ran",
        }
        self.ledger.append(record)
        return record

    def _lost(self, spec: JobSpec, error: BaseException, reason: Callable[[BaseException], str]) -> dict[str, Any]:
        record = {
            "run": spec.run,
            "key": spec.item.key,
            "input": spec.item.shown,
            "status": "failed",
            "reason": f"lost: {reason(error)}",
        }
        self.ledger.append(record)
        return record


def _account(record: dict[str, Any], item: BatchInput, summary: BatchSummary, log: Callable[[str], None]) -> None:
    """Count one input's final record in the summary and say it in one line."""
    status = record.get("status")
    frames = int(record.get("frames_out") or 0)
    summary.frames += frames
    if status == "done":
        summary.done.append(item.shown)
        fps = record.get("fps")
        rate = f", {fps} frames/s" if fps else ""
        log(f"spgim batch: done: {item.shown} ({frames} frames in {record.get('seconds', 0):.1f} s{rate})")
    elif status == "failed":
        summary.failed[item.shown] = str(record.get("reason"))
        log(f"spgim batch: failed: {item.shown}: {record.get('reason')}")
    else:
        summary.interrupted.append(item.shown)
        kept = f"{frames} frames kept, finalised" if frames else "nothing written"
        log(f"spgim batch: interrupted: {item.shown} ({kept})")


def _progress_bar(total: int, *, enabled: bool) -> Any:
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="input", desc="batch", dynamic_ncols=True)
