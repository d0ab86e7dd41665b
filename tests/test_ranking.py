"""``auto`` by measurement: the ranking is measured once, cached, reused, invalidated, and skips failing backends."""

from __future__ import annotations

import dataclasses
import json
import shutil
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


def test_a_backend_failing_at_warmup_is_skipped_with_its_reason(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _fresh(folder, tmp_path)
    broken = dataclasses.replace(registry.BACKENDS["torchscript"], factory=lambda *_: _FailsAtWarmup())
    monkeypatch.setitem(registry.BACKENDS, "torchscript", broken)
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
