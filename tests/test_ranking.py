"""``auto`` by measurement: the ranking is measured once, cached, reused, invalidated, and skips failing backends."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_pairs import export_tiny

from spgim.errors import SpgimError
from spgim.runtime import ranking, registry
from spgim.runtime.matting import Matter
from spgim.runtime.ranking import RANKING_FILE, Ranking, Trial


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("ranking"), formats="torchscript,onnx", precision="fp32,fp16")


def _fresh(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    (copy / RANKING_FILE).unlink(missing_ok=True)
    return copy


def _count_measurements(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[str, str]]]:
    calls: list[list[tuple[str, str]]] = []
    original = ranking.measure_candidates

    def counting(artifacts: Any, candidates: list[tuple[str, str]], *args: Any) -> list[Trial]:
        calls.append(list(candidates))
        return original(artifacts, candidates, *args)

    monkeypatch.setattr(ranking, "measure_candidates", counting)
    return calls


@pytest.mark.slow
def test_ranking_is_cached_reused_and_invalidated(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fresh(folder, tmp_path)
    calls = _count_measurements(monkeypatch)
    first = Matter(model, work_size=128)
    assert len(calls) == 1 and ("onnxruntime", "fp32") in calls[0] and ("torchscript", "fp32") in calls[0]
    assert "onnxruntime-twin" not in {name for name, _ in calls[0]}  # correctness-only backend, never auto
    cache = json.loads((model / RANKING_FILE).read_text())
    (entry,) = cache["entries"].values()
    assert entry["work_hw"] == [128, 128] and entry["machine"]["cpu"]["flags"]["avx2"] in (True, False)
    timed = {t["backend"]: t["seconds"] for t in entry["trials"] if t["seconds"] is not None}
    assert all(t["spgm_seconds"] > 0 for t in entry["trials"] if t["seconds"] is not None)
    assert first.backend_name.startswith(min(timed, key=lambda name: timed[name]))
    assert "measured, cached in" in first.selection

    second = Matter(model, work_size=128)
    assert len(calls) == 1 and "reused" in second.selection
    assert second.backend_name == first.backend_name

    # Another working size, other threading, other library versions, a new export: each measures again.
    Matter(model, work_size=96)
    assert len(calls) == 2
    Matter(model, work_size=96, spinning=False)
    assert len(calls) == 3
    Matter(model, work_size=96, spinning=False)
    assert len(calls) == 3
    versions = {**ranking.library_versions(), "onnxruntime": "0.0.1"}
    monkeypatch.setattr(ranking, "library_versions", lambda: versions)
    Matter(model, work_size=128)
    assert len(calls) == 4
    monkeypatch.undo()
    calls = _count_measurements(monkeypatch)
    Matter(model, work_size=128)
    assert calls == []  # back to the original versions: that entry was kept
    sidecar = model / "spgm.onnx.json"
    data = json.loads(sidecar.read_text())
    data["exported_at"] = "2099-01-01T00:00:00Z"  # what a re-export changes
    sidecar.write_text(json.dumps(data))
    Matter(model, work_size=128)
    assert len(calls) == 1


class _FailsAtWarmup:
    name = "torchscript (broken)"
    device = "cpu"

    def infer(self, image: np.ndarray) -> np.ndarray:
        raise RuntimeError("kernel exploded")


def _break_torchscript(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = dataclasses.replace(registry.BACKENDS["torchscript"], factory=lambda *_: _FailsAtWarmup())
    monkeypatch.setitem(registry.BACKENDS, "torchscript", broken)


def test_a_backend_failing_at_warmup_is_skipped_with_its_reason(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fresh(folder, tmp_path)
    _break_torchscript(monkeypatch)
    matter = Matter(model, work_size=128)
    assert not matter.backend_name.startswith("torchscript")
    assert "torchscript fp32 (RuntimeError: kernel exploded)" in matter.selection
    (entry,) = json.loads((model / RANKING_FILE).read_text())["entries"].values()
    failed = next(t for t in entry["trials"] if t["backend"] == "torchscript")
    assert failed["seconds"] is None and failed["reason"] == "RuntimeError: kernel exploded"
    refusal = "no backend ran torchscript in auto on this machine: torchscript fp32: RuntimeError: kernel exploded"
    with pytest.raises(SpgimError, match=refusal):
        Matter(model, backend="torchscript", precision="auto", work_size=128)


def test_choose_takes_the_fastest_within_the_precision_rule() -> None:
    trials = [
        Trial("onnxruntime", "fp32", seconds=0.050, alpha_mean_diff=0.0, engine="ort"),
        Trial("onnxruntime", "fp16", seconds=0.030, alpha_mean_diff=2e-4, engine="ort16"),
        Trial("torchscript", "fp32", seconds=0.040, alpha_mean_diff=1e-7, engine="ts"),
        Trial("torchscript", "bf16", seconds=0.010, alpha_mean_diff=8e-3, engine="tsbf"),  # too far from fp32
        Trial("openvino", "fp32", reason="openvino is not installed"),
    ]
    table = Ranking(trials, cache=None, reused=False)
    assert table.choose("auto", "fp32").label == "torchscript fp32"
    assert table.choose("auto", "auto").label == "onnxruntime fp16"
    assert table.choose("torchscript", "auto").label == "torchscript fp32"
    assert table.choose("auto", "bf16").label == "torchscript bf16"  # asked for by name: no tolerance rule
    line = table.explain(table.choose("auto", "auto"), (288, 512))
    assert line.startswith("auto picked onnxruntime fp16 (ort16): fastest at 512x288, 30 ms/frame")
    assert "skipped: openvino fp32 (openvino is not installed)" in line
    with pytest.raises(SpgimError, match="no backend ran openvino in fp32"):
        table.choose("openvino", "fp32")


def test_choose_follows_the_keyframe_schedule() -> None:
    # The live export's figures at 320x192 on this machine's kind: OpenVINO's pair is faster, ONNX Runtime's
    # SPGM alone is, and between keyframes only SPGM runs.
    trials = [
        Trial("openvino", "fp32", seconds=0.0366, spgm_seconds=0.030, alpha_mean_diff=0.0, engine="ov"),
        Trial("onnxruntime", "fp32", seconds=0.0451, spgm_seconds=0.020, alpha_mean_diff=1e-7, engine="ort"),
        Trial("torchscript", "fp32", seconds=0.0400, alpha_mean_diff=1e-7, engine="ts"),  # an older cache: pair only
    ]
    table = Ranking(trials, cache=None, reused=False)
    assert table.choose("auto", "fp32").label == "openvino fp32"
    assert table.choose("auto", "fp32", keyframe_interval=8).label == "onnxruntime fp32"
    assert trials[1].per_frame(8) == pytest.approx(0.020 + 0.0251 / 8)
    assert trials[2].per_frame(8) == pytest.approx(0.040)
    line = table.explain(table.choose("auto", "fp32", 8), (192, 320), 8)
    assert line.startswith("auto picked onnxruntime fp32 (ort): fastest at 320x192, SPD every 8 frames, 23 ms/frame")
    assert "others: openvino fp32 31 ms, torchscript fp32 40 ms" in line


def test_precision_auto_measures_every_precision_and_keeps_alpha_close(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fresh(folder, tmp_path)
    calls = _count_measurements(monkeypatch)
    matter = Matter(model, backend="onnxruntime", precision="auto", work_size=128)
    assert sorted(calls[0]) == [("onnxruntime", "fp16"), ("onnxruntime", "fp32")]
    assert matter.precision in ("fp32", "fp16") and matter.backend_name.startswith("onnxruntime")
    (entry,) = json.loads((model / RANKING_FILE).read_text())["entries"].values()
    for trial in entry["trials"]:
        assert trial["alpha_mean_diff"] is not None and trial["alpha_mean_diff"] < 5e-3


def test_symlinks_planted_beside_the_cache_are_not_followed(folder: Path, tmp_path: Path) -> None:
    """An unpacked tarball or a shared folder may hold symlinks where the cache is written: their targets stay."""
    model = _fresh(folder, tmp_path)
    old_temporary, target = model / f"{RANKING_FILE}.tmp", tmp_path / "precious.txt"
    target.write_text("precious\n")
    old_temporary.symlink_to(target)
    matter = Matter(model, work_size=128)
    assert "measured, cached in" in matter.selection and target.read_text() == "precious\n"
    assert json.loads((model / RANKING_FILE).read_text())["entries"]
    assert old_temporary.is_symlink() and not list(model.glob(f".{RANKING_FILE}*"))  # no temporary left behind
    # The lock file is opened without following a symlink: the ranking then goes unwritten, the target untouched.
    lock = model / f"{RANKING_FILE}.lock"
    lock.unlink()
    lock.symlink_to(target)
    (model / RANKING_FILE).unlink()
    matter = Matter(model, work_size=128)
    assert matter.selection.endswith("ranking not cached") and target.read_text() == "precious\n"
    assert not (model / RANKING_FILE).exists()


_RANK_IN_A_PROCESS = """
import json, sys, time
from pathlib import Path
from spgim.runtime import ranking
from spgim.runtime.artifacts import load_artifacts
from spgim.runtime.matting import Matter
from spgim.runtime.registry import BackendOptions

model, ready, go, size = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
measure = ranking.measure_candidates
# First many rankings in a row, each of a new working size, for the two processes' writes to overlap: what this
# leaves out is the measurement (it only delays the write); the cache's read-modify-write is the real one.
ranking.measure_candidates = lambda _, candidates, *rest: [
    ranking.Trial(name, precision, seconds=0.01, spgm_seconds=0.005, alpha_mean_diff=0.0)
    for name, precision in candidates
]
artifacts, unsaved, unreadable = load_artifacts(model), 0, 0
ready.touch()
while not go.exists():  # both processes start at the same moment
    time.sleep(0.01)
for index in range(300):
    work_hw = (32 * (index + 2), size)
    unsaved += ranking.rank(model, artifacts, [("onnxruntime", "fp32")], work_hw, BackendOptions("fp32")).cache is None
    try:
        json.loads((model / ranking.RANKING_FILE).read_text())
    except ValueError:
        unreadable += 1
# Then a real ranking each, measured at the same time.
ranking.measure_candidates = measure
selection = Matter(model, work_size=size, threads=1).selection
print(json.dumps({"selection": selection, "unsaved": unsaved, "unreadable": unreadable}))
"""


def test_two_processes_ranking_at_once_leave_one_valid_file(folder: Path, tmp_path: Path) -> None:
    model = _fresh(folder, tmp_path)
    go = tmp_path / "go"
    jobs = []
    for size in (96, 128):
        ready = tmp_path / f"ready-{size}"
        argv = [sys.executable, "-c", _RANK_IN_A_PROCESS, str(model), str(ready), str(go), str(size)]
        jobs.append((ready, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for ready, job in jobs:
        while not ready.exists():
            assert job.poll() is None, job.communicate()[1]
            time.sleep(0.05)
    go.touch()
    for _, job in jobs:
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err
        report = json.loads(out.splitlines()[-1])
        assert "measured, cached in" in report["selection"]
        assert (report["unsaved"], report["unreadable"]) == (0, 0)  # no write lost, no torn file seen
    cache = json.loads((model / RANKING_FILE).read_text())
    assert len(cache["entries"]) == ranking.KEPT_ENTRIES
    assert not list(model.glob(f".{RANKING_FILE}*"))  # no temporary file left behind


def _spoil_a_trial(data: dict[str, Any]) -> str:
    (entry,) = data["entries"].values()
    entry["trials"][0]["seconds"] = "fast"
    return json.dumps(data)


def _spoil_the_entry(data: dict[str, Any]) -> str:
    (key,) = data["entries"]
    data["entries"][key] = [1, 2]
    return json.dumps(data)


def _spoil_the_trials(data: dict[str, Any]) -> str:
    (entry,) = data["entries"].values()
    entry["trials"] = {"onnxruntime": 1}
    return json.dumps(data)


def _nest_deeply(data: dict[str, Any]) -> str:
    (key,) = data["entries"]
    return json.dumps({"format": "spgim-ranking", "entries": {key: "@"}}).replace('"@"', "[" * 100_000 + "]" * 100_000)


@pytest.mark.slow
def test_a_cache_of_the_wrong_shape_is_measured_again_with_a_note(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fresh(folder, tmp_path)
    Matter(model, work_size=128)
    valid = json.loads((model / RANKING_FILE).read_text())
    calls = _count_measurements(monkeypatch)
    spoils = [
        (_spoil_a_trial, "entry.trials[0].seconds is not a number"),
        (_spoil_the_entry, "entry is not an object"),
        (_spoil_the_trials, "entry.trials is not a list"),
        (_nest_deeply, "its file is nested too deeply"),
    ]
    for spoil, fault in spoils:
        (model / RANKING_FILE).write_text(spoil(json.loads(json.dumps(valid))))
        matter = Matter(model, work_size=128)
        assert f"(cached ranking ignored, {fault}: measured again)" in matter.selection
        assert "\n" not in matter.selection
        (entry,) = json.loads((model / RANKING_FILE).read_text())["entries"].values()
        assert all(isinstance(t["seconds"], float) for t in entry["trials"])
    assert len(calls) == len(spoils)


def test_a_failed_trial_is_measured_again_once_it_expires(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fresh(folder, tmp_path)
    _break_torchscript(monkeypatch)
    Matter(model, work_size=128)
    monkeypatch.undo()
    calls = _count_measurements(monkeypatch)
    Matter(model, work_size=128)
    assert calls == []  # a fresh failure is not retried on every run
    cache = json.loads((model / RANKING_FILE).read_text())
    (entry,) = cache["entries"].values()
    failed = next(t for t in entry["trials"] if t["backend"] == "torchscript")
    failed["failed_at"] -= ranking.FAILURE_EXPIRY
    (model / RANKING_FILE).write_text(json.dumps(cache))
    Matter(model, work_size=128)
    assert calls == [[("torchscript", "fp32")]]
    (entry,) = json.loads((model / RANKING_FILE).read_text())["entries"].values()
    retried = next(t for t in entry["trials"] if t["backend"] == "torchscript")
    assert retried["seconds"] > 0 and retried["reason"] is None and retried["failed_at"] is None


def test_an_fp16_trial_measured_alone_gets_an_alpha_difference(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranking fp16 alone runs an fp32 reference too, so a later --precision auto may pick the cached fp16 trial."""
    model = _fresh(folder, tmp_path)
    Matter(model, precision="fp16", work_size=128)
    (entry,) = json.loads((model / RANKING_FILE).read_text())["entries"].values()
    ran = [t for t in entry["trials"] if t["seconds"] is not None]
    assert {(t["backend"], t["precision"]) for t in ran} >= {("onnxruntime", "fp16")}
    assert all(t["alpha_mean_diff"] is not None and t["alpha_mean_diff"] < 5e-3 for t in ran)
    calls = _count_measurements(monkeypatch)
    matter = Matter(model, backend="onnxruntime", precision="auto", work_size=128)
    assert calls == [[("onnxruntime", "fp32")]]  # fp16 comes from the cache, eligible as measured
    assert matter.precision in ("fp32", "fp16")
