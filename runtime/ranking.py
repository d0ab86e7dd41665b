"""``backend="auto"`` by measurement: time every usable backend x precision once per machine, cache the ranking.

On first use of an export folder on a machine, each candidate is opened, warmed up and timed for a
few frames at the working size, the SPD + SPGM pair and SPGM alone (what a frame between keyframes
costs), so the choice follows the keyframe schedule the job streams with; its alpha is compared with
fp32's. The trials are cached next to the model (``spgim-ranking.json``) under a key made of the
export (manifest and sidecars), this machine (CPU model and flags, GPUs), the library versions, the
working size and the threading asked for (a file job's engines do not spin their idle threads, which
changes who is fastest), so a new export, another machine or an upgraded library measures again. A
candidate that fails to open or to run is kept in the cache with its reason and skipped.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError

from .artifacts import MANIFEST, Artifact, ChangedArtifactError
from .machine import cpu_facts, gpu_names, library_versions
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


@dataclass
class Trial:
    """One backend x precision as measured: seconds per frame, or why it could not run.

    ``seconds`` is the SPD + SPGM pair (a keyframe); ``spgm_seconds`` SPGM alone on cached features.
    """

    backend: str
    precision: str
    seconds: float | None = None
    spgm_seconds: float | None = None
    alpha_mean_diff: float | None = None  # against the first fp32 trial's alpha
    engine: str = ""
    reason: str | None = None

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


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {"format": "spgim-ranking", "entries": {}}
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        return {"format": "spgim-ranking", "entries": {}}
    return data


def _write_cache(path: Path, key: str, entry: dict[str, Any]) -> bool:
    data = _read_cache(path)
    entries = {key: entry, **{k: v for k, v in data["entries"].items() if k != key}}
    data["entries"] = dict(list(entries.items())[:KEPT_ENTRIES])
    try:
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.replace(path)
    except OSError:
        return False
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
        backend = open_backend(record, artifacts, options)[0]
        trial.engine = backend.name
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
    """Time each (backend, precision) on a random frame of ``work_hw``; fp32 first, the others compared to it."""
    image = np.random.default_rng(0).random((1, 3, *work_hw), dtype=np.float32)
    ordered = sorted(candidates, key=lambda item: item[1] != "fp32")
    trials, reference = [], None
    for name, precision in ordered:
        record = BACKENDS[name]
        reason = runnable(record, artifacts, precision)
        if reason is not None:
            trials.append(Trial(name, precision, reason=reason))
            continue
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

    def choose(self, backend: str, precision: str, keyframe_interval: int = 0) -> Trial:
        """The fastest trial matching ``backend`` (a name or ``"auto"``) and ``precision`` (a name or ``"auto"``).

        Fastest per frame of a stream with SPD every ``keyframe_interval`` frames (0: SPD on every frame).
        ``precision="auto"`` accepts fp32 and any reduced precision whose alpha mean difference from fp32
        is at most :data:`AUTO_PRECISION_TOLERANCE`.
        """
        ran = [t for t in self.trials if t.seconds is not None and backend in ("auto", t.backend)]
        if precision == "auto":
            fits = [
                t
                for t in ran
                if t.precision == "fp32"
                or (t.alpha_mean_diff is not None and t.alpha_mean_diff <= AUTO_PRECISION_TOLERANCE)
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
    """The cached trials for this export, machine and working size, measuring the candidates not yet in the cache."""
    folder = Path(model_dir)
    key = ranking_key(folder, artifacts, work_hw, options)
    path = folder / RANKING_FILE
    entry = _read_cache(path)["entries"].get(key)
    try:
        known = {(t["backend"], t["precision"]): Trial(**t) for t in (entry or {}).get("trials", [])}
    except (TypeError, KeyError):  # written by another spgim version: measure again
        known = {}
    missing = [item for item in candidates if item not in known]
    if missing:
        for trial in measure_candidates(artifacts, missing, work_hw, options):
            known[(trial.backend, trial.precision)] = trial
        entry = {
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpu": cpu_facts(), "gpus": gpu_names(), "libraries": library_versions()},
            "work_hw": list(work_hw),
            "trials": [asdict(t) for t in known.values()],
        }
        saved = _write_cache(path, key, entry)
        return Ranking([known[item] for item in candidates], path if saved else None, reused=False)
    return Ranking([known[item] for item in candidates], path, reused=True)
