"""``backend="auto"`` by measurement: time every usable backend x precision once per machine, cache the ranking.

On first use of an export folder on a machine, each candidate is opened, warmed up and timed for a
few frames at the working size, the SPD + SPGM pair and SPGM alone (what a frame between keyframes
costs), so the choice follows the keyframe schedule the job streams with; its alpha is compared with
fp32's. The trials are cached next to the model (``spgim-ranking.json``) under a key made of the
export (manifest and sidecars), this machine (CPU model and flags, GPUs), the library versions, the
working size and the threading asked for (a file job's engines do not spin their idle threads, which
changes who is fastest), so a new export, another machine or an upgraded library measures again. A
candidate that fails to open or to run is kept in the cache with its reason and skipped, and measured
again once the failure is :data:`FAILURE_EXPIRY` old. The file is read-modify-written under a lock and
replaced through a fresh temporary file (a shared or unpacked folder may hold planted symlinks); a cache
of the wrong shape is measured again, with a note in the line ``auto`` prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import hashlib
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError
from spgim.machine import cpu_facts, gpu_names, library_versions

from .artifacts import MANIFEST, Artifact, ChangedArtifactError, misfit
from .registry import BACKENDS, BackendOptions, BackendRecord, open_backend, runnable
from .timing import time_calls

RANKING_FILE = "spgim-ranking.json"
# --precision auto keeps a reduced precision only if its alpha stays this close to fp32's (mean abs).
AUTO_PRECISION_TOLERANCE = 5e-3
# ONNX Runtime's first calls on a session run up to 2x slow (live export, 320x192, SPGM alone: 10.9, 17.5,
# 11.8 ms, then 7-8); one warm-up call ranked it behind OpenVINO, which is slower from the third call on.
WARMUP_CALLS = 2
TIMED_CALLS = 3
SPGM_TIMED_CALLS = 5  # SPGM alone is the cheaper call and, keyframed, most of a frame
KEPT_ENTRIES = 8  # rankings of other machines/exports kept in the file, newest first
# A failed trial (out of memory, plugin not found, a driver hiccup) is retried after an hour: each retry costs
# a load that may take seconds, so not on every job over the folder, but a freed GPU or a built plugin is
# picked up the same hour without deleting the cache. What a machine lacks for good (no GPU, no bf16) is
# found by the backends' probes on every run, before anything is measured.
FAILURE_EXPIRY = 3600.0


@dataclass
class Trial:
    """One backend x precision as measured: seconds per frame, or why it could not run.

    ``seconds`` is the SPD + SPGM pair (a keyframe); ``spgm_seconds`` SPGM alone on cached features.
    """

    backend: str
    precision: str
    seconds: float | None = None
    spgm_seconds: float | None = None
    alpha_mean_diff: float | None = None  # against an fp32 alpha of the same frame
    gate_passed: bool | None = None  # int8: whether the export's accuracy gate passed (its sidecars say)
    engine: str = ""
    reason: str | None = None
    failed_at: float | None = None  # time.time() of the failure; None where it ran

    def expired(self, now: float) -> bool:
        """Whether this failed trial is old enough to measure again (see :data:`FAILURE_EXPIRY`)."""
        return self.reason is not None and (self.failed_at is None or now - self.failed_at >= FAILURE_EXPIRY)

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    def per_frame(self, keyframe_interval: int) -> float:
        """Mean seconds per frame of a stream with SPD every ``keyframe_interval`` frames (0: every frame)."""
        pair = self.seconds or 0.0
        if keyframe_interval <= 0 or self.spgm_seconds is None:
            return pair
        return self.spgm_seconds + max(pair - self.spgm_seconds, 0.0) / keyframe_interval


def ranking_key(
    model_dir: Path, artifacts: list[Artifact], work_hw: tuple[int, int], options: BackendOptions | None = None
) -> str:
    """A digest of what decides the ranking: the export, this machine, the library versions, the working size,
    and the CPU threading asked for (thread count, spinning idle threads)."""
    sidecars = [a.path.with_name(a.path.name + ".json").read_bytes() for a in artifacts]
    digest = hashlib.sha256((model_dir / MANIFEST).read_bytes())
    for sidecar in sidecars:
        digest.update(hashlib.sha256(sidecar).digest())
    facts: dict[str, Any] = {
        "cpu": cpu_facts(),
        "gpus": gpu_names(),
        "libraries": library_versions(),
        "work_hw": list(work_hw),
    }
    if options is not None:
        facts["threading"] = {"threads": options.threads, "spinning": options.spinning}
    digest.update(json.dumps(facts, sort_keys=True).encode())
    return digest.hexdigest()[:32]


# What a cache entry must look like to be reused: a tuple is any one of its shapes, None is null.
_NUMBER = (float, None)
_TRIAL_SHAPE: dict[str, Any] = {
    "backend": str,
    "precision": str,
    "seconds": _NUMBER,
    "spgm_seconds": _NUMBER,
    "alpha_mean_diff": _NUMBER,
    "gate_passed": (bool, None),
    "engine": str,
    "reason": (str, None),
    "failed_at": _NUMBER,
}
_TRIAL_KEYS = {"backend", "precision"}  # required; no others than the shape's
_ENTRY_SHAPE = {"measured_at": str, "machine": dict, "work_hw": [int], "trials": [_TRIAL_SHAPE]}


def _empty() -> dict[str, Any]:
    return {"format": "spgim-ranking", "entries": {}}


def _read_cache(path: Path) -> tuple[dict[str, Any], str | None]:
    """The cache file and, where it exists but cannot be used, why (a missing file is no fault)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return _empty(), None
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON, an integer of 5000 digits
        return _empty(), f"its file is unreadable ({type(error).__name__})"
    except RecursionError:  # json's parser recurses once per nesting level
        return _empty(), "its file is nested too deeply"
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        return _empty(), "its file has no entries object"
    return data, None


def _cached_trials(entry: Any) -> tuple[dict[tuple[str, str], Trial], str | None]:
    """The trials of a cache entry, or none and why the entry does not have the declared shape."""
    if entry is None:
        return {}, None
    fault = misfit(entry, _ENTRY_SHAPE, "entry")
    trials = entry.get("trials") if fault is None else None
    if not isinstance(trials, list):
        return {}, fault or "entry has no trials"
    fits = [_TRIAL_KEYS <= t.keys() <= _TRIAL_SHAPE.keys() for t in trials]
    fault = next((f"entry.trials[{i}] lacks or adds fields" for i, ok in enumerate(fits) if not ok), None)
    if fault is not None:
        return {}, fault
    return {(t["backend"], t["precision"]): Trial(**t) for t in trials}, None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path``'s lock file for a read-modify-write (another job may rank the same folder).

    The lock file is opened without following a symlink: a planted one makes the write fail, not its target change.
    """
    descriptor = os.open(
        path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
    )
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> bool:
    """Put ``entry`` first in the cache file, keeping the other entries that still fit; False where it cannot.

    The caller holds :func:`_locked` on ``path``; the write is a rename, so a reader never sees half a file."""
    temporary = None
    try:
        data, _ = _read_cache(path)  # again, under the lock: another job may have written since
        others = {k: v for k, v in data["entries"].items() if k != key and _cached_trials(v)[1] is None}
        data = {"format": "spgim-ranking", "entries": dict(list({key: entry, **others}.items())[:KEPT_ENTRIES])}
        try:
            text = json.dumps(data, indent=2) + "\n"
        except RecursionError:  # another entry nests about as deep as json reads: write this one alone
            text = json.dumps({**data, "entries": {key: entry}}, indent=2) + "\n"
        # A fresh name, created exclusively, then renamed over the cache: a symlink planted at a fixed
        # temporary name (or at the cache itself) is never written through.
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(descriptor, "w") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(text)
        os.replace(temporary, path)
        temporary = None
    except OSError:
        return False
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
    return True


def _infer_into(backend: Any, image: np.ndarray, outputs: list[np.ndarray]) -> None:
    outputs.append(backend.infer(image))


def _run_spgm(backend: Any, image: Any, features: tuple[Any, ...]) -> None:
    alpha = backend.run_spgm(image, features)
    if not isinstance(alpha, np.ndarray):
        alpha.cpu()  # a GPU tensor: the download waits for the work, as infer's does


def _measure(
    record: BackendRecord, artifacts: list[Artifact], options: BackendOptions, image: np.ndarray
) -> tuple[Trial, np.ndarray | None]:
    trial = Trial(record.name, options.precision)
    backend = None
    try:
        backend, _, spgm = open_backend(record, artifacts, options)
        trial.engine = backend.name
        if options.precision == "int8":
            trial.gate_passed = bool(spgm.sidecar.get("int8", {}).get("gate", {}).get("passed"))
        outputs: list[np.ndarray] = []
        # A partial, not a lambda: it lets the backend go with the call, before the collection below.
        samples = time_calls(functools.partial(_infer_into, backend, image, outputs), WARMUP_CALLS, TIMED_CALLS)
        trial.seconds = statistics.median(samples)
        spd_input = image if backend.device == "cpu" else _on_device(image, backend.device)
        features = tuple(backend.run_spd(spd_input))
        run_spgm = functools.partial(_run_spgm, backend, spd_input, features)
        samples = time_calls(run_spgm, WARMUP_CALLS, SPGM_TIMED_CALLS)
        trial.spgm_seconds = statistics.median(samples)
        return trial, np.asarray(outputs[-1], dtype=np.float32)
    except ChangedArtifactError:  # not a failing engine but a changed export folder: refuse it, do not skip
        raise
    except Exception as error:  # any engine's failure at load or warm-up skips that candidate
        message = str(error).splitlines()[0] if str(error) else ""
        trial.reason = f"{type(error).__name__}: {message}"[:240]
        trial.failed_at = time.time()
        return trial, None
    finally:
        del backend
        gc.collect()  # sessions of large models hold gigabytes: free one before opening the next


def _on_device(image: np.ndarray, device: str) -> Any:
    import torch

    return torch.from_numpy(image).to(device)


def measure_candidates(
    artifacts: list[Artifact],
    candidates: list[tuple[str, str]],
    work_hw: tuple[int, int],
    options: BackendOptions,
) -> list[Trial]:
    """Time each (backend, precision) on a random frame of ``work_hw``; fp32 first, the others compared to it.

    Where no fp32 candidate runs (only fp16 missing from the cache, say), an fp32 reference is run once,
    untimed, so that every reduced precision that ran has its alpha difference.
    """
    image = np.random.default_rng(0).random((1, 3, *work_hw), dtype=np.float32)
    ordered = sorted(candidates, key=lambda item: item[1] != "fp32")
    trials: list[Trial] = []
    reference, looked = None, False
    for name, precision in ordered:
        record = BACKENDS[name]
        reason = runnable(record, artifacts, precision)
        if reason is not None:
            trials.append(Trial(name, precision, reason=reason, failed_at=time.time()))
            continue
        if reference is None and precision != "fp32" and not looked:
            tried = {t.backend for t in trials if t.precision == "fp32"}
            names = [n for n in dict.fromkeys([*(n for n, _ in ordered), *BACKENDS]) if n not in tried]
            reference, looked = _fp32_reference(artifacts, names, options, image), True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial, alpha = _measure(record, artifacts, _with_precision(options, precision), image)
        if alpha is not None:
            if reference is None and precision == "fp32":
                reference = alpha
            if reference is not None and reference.shape == alpha.shape:
                trial.alpha_mean_diff = float(np.abs(alpha - reference).mean())
        trials.append(trial)
    return trials


def _fp32_reference(
    artifacts: list[Artifact], names: list[str], options: BackendOptions, image: np.ndarray
) -> np.ndarray | None:
    """fp32's alpha of ``image`` from the first of ``names`` that runs fp32 (one untimed call), or None."""
    fp32 = _with_precision(options, "fp32")
    for name in names:
        record = BACKENDS[name]
        if not record.in_auto or runnable(record, artifacts, "fp32") is not None:
            continue
        backend = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                backend = open_backend(record, artifacts, fp32)[0]
                return np.asarray(backend.infer(image), dtype=np.float32)
        except ChangedArtifactError:
            raise
        except Exception:  # as in _measure: a backend failing here is not the reference; the next one may be
            continue
        finally:
            del backend
            gc.collect()
    return None


def _with_precision(options: BackendOptions, precision: str) -> BackendOptions:
    return BackendOptions(
        precision=precision, threads=options.threads, gpu=options.gpu, plugin=options.plugin, spinning=options.spinning
    )


@dataclass
class Ranking:
    """The trials for one export on one machine, and where they came from."""

    trials: list[Trial]
    cache: Path | None
    reused: bool
    note: str | None = None  # why a cached ranking was not used, where it could not be

    def choose(self, backend: str, precision: str, keyframe_interval: int = 0) -> Trial:
        """The fastest trial matching ``backend`` (a name or ``"auto"``) and ``precision`` (a name or ``"auto"``).

        Fastest per frame of a stream with SPD every ``keyframe_interval`` frames (0: SPD on every frame).
        ``precision="auto"`` accepts fp32 and any reduced precision whose alpha mean difference from fp32
        is at most :data:`AUTO_PRECISION_TOLERANCE`; int8 only where its export passed its accuracy gate too
        (an export written with ``--accept-accuracy-loss`` runs when asked for by name, never by ``auto``).
        """
        ran = [t for t in self.trials if t.seconds is not None and backend in ("auto", t.backend)]
        if precision == "auto":
            fits = [
                t
                for t in ran
                if t.precision == "fp32"
                or (
                    t.alpha_mean_diff is not None
                    and t.alpha_mean_diff <= AUTO_PRECISION_TOLERANCE
                    and (t.precision != "int8" or t.gate_passed is True)
                )
            ]
        else:
            fits = [t for t in ran if t.precision == precision]
        if not fits:
            reasons = "; ".join(f"{t.label}: {t.reason}" for t in self.trials if t.reason) or "nothing to measure"
            raise SpgimError(f"no backend ran {backend} in {precision} on this machine: {reasons}")
        return min(fits, key=lambda t: t.per_frame(keyframe_interval))

    def explain(self, picked: Trial, work_hw: tuple[int, int], keyframe_interval: int = 0) -> str:
        """One line: what was picked, why, the others' times, and the skipped ones' reasons."""
        ran = sorted((t for t in self.trials if t.seconds is not None), key=lambda t: t.per_frame(keyframe_interval))
        others = ", ".join(f"{t.label} {1e3 * t.per_frame(keyframe_interval):.0f} ms" for t in ran if t is not picked)
        schedule = f", SPD every {keyframe_interval} frames" if keyframe_interval > 0 else ""
        skipped = "; ".join(f"{t.label} ({t.reason})" for t in self.trials if t.reason)
        where = f"{'reused' if self.reused else 'measured, cached in'} {self.cache}" if self.cache else "not cached"
        if self.note:
            where += f" ({self.note})"
        return (
            f"auto picked {picked.label} ({picked.engine}): fastest at {work_hw[1]}x{work_hw[0]}{schedule}, "
            f"{1e3 * picked.per_frame(keyframe_interval):.0f} ms/frame"
            + (f"; others: {others}" if others else "")
            + (f"; skipped: {skipped}" if skipped else "")
            + f"; ranking {where}"
        )


def rank(
    model_dir: str | Path,
    artifacts: list[Artifact],
    candidates: list[tuple[str, str]],
    work_hw: tuple[int, int],
    options: BackendOptions,
) -> Ranking:
    """The cached trials for this export, machine and working size, measuring the candidates not yet in the cache
    (and the failures that have expired)."""
    folder = Path(model_dir)
    key = ranking_key(folder, artifacts, work_hw, options)
    path = folder / RANKING_FILE
    known, note = _known_trials(path, key)
    if not _missing(candidates, known):
        return Ranking([known[item] for item in candidates], path, reused=True)
    try:
        # Measured under the cache's lock: jobs that open a fresh folder at once (a batch's workers on one node,
        # or on nodes of one type sharing the folder) wait for the first one's ranking instead of each timing
        # every backend while the others load the same cores.
        with _locked(path):
            known, note = _known_trials(path, key)
            missing = _missing(candidates, known)
            if not missing:
                return Ranking([known[item] for item in candidates], path, reused=True)
            saved = _measure_and_save(path, key, known, missing, artifacts, work_hw, options)
    except OSError:  # a lock that cannot be taken (a read-only folder, a planted symlink): measured, not cached
        for trial in measure_candidates(artifacts, _missing(candidates, known), work_hw, options):
            known[(trial.backend, trial.precision)] = trial
        saved = False
    return Ranking([known[item] for item in candidates], path if saved else None, reused=False, note=note)


def _known_trials(path: Path, key: str) -> tuple[dict[tuple[str, str], Trial], str | None]:
    """The cached trials under ``key`` and, where the cache could not be used, a note saying why."""
    data, fault = _read_cache(path)
    known, entry_fault = _cached_trials(data["entries"].get(key))
    fault = fault or entry_fault
    return known, f"cached ranking ignored, {fault}: measured again" if fault else None


def _missing(candidates: list[tuple[str, str]], known: dict[tuple[str, str], Trial]) -> list[tuple[str, str]]:
    now = time.time()
    return [item for item in candidates if item not in known or known[item].expired(now)]


def _measure_and_save(
    path: Path,
    key: str,
    known: dict[tuple[str, str], Trial],
    missing: list[tuple[str, str]],
    artifacts: list[Artifact],
    work_hw: tuple[int, int],
    options: BackendOptions,
) -> bool:
    """Measure ``missing`` into ``known`` and write the entry (the caller holds the cache's lock)."""
    for trial in measure_candidates(artifacts, missing, work_hw, options):
        known[(trial.backend, trial.precision)] = trial
    entry = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": cpu_facts(), "gpus": gpu_names(), "libraries": library_versions()},
        "work_hw": list(work_hw),
        "trials": [asdict(t) for t in known.values()],
    }
    return _write_cache(path, key, entry)
