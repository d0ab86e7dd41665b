"""``spgim demo`` (what ``make demo`` runs), shrunk: generate, train three stages, evaluate, then reuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SPGIM = str(Path(sys.executable).with_name("spgim"))


def _demo(out: Path) -> subprocess.CompletedProcess[str]:
    shrink = ["--scenes", "12", "--epochs", "1", "--workers", "0", "--clip-frames", "8", "--bench-iters", "1"]
    return subprocess.run(
        [SPGIM, "demo", "--out", str(out), *shrink],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_demo_trains_evaluates_and_reuses_its_checkpoints(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "61.2" in first.stdout and "generated 12 scenes" in first.stdout
    for stage in ("caption", "spd", "spgm"):
        assert f"demo: trained {stage}" in first.stdout and (tmp_path / "runs" / stage / "best.pt").is_file()
    assert "single" in first.stdout and "multi" in first.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["whole_image"]["all"]["count"] > 0
    for name in ("clip.mp4", "composite.mp4", "foreground.mov", "bench.json", "bench.png", "export/spgim-export.json"):
        assert (tmp_path / name).is_file(), name
    assert "matted" in first.stdout and "fps" in first.stdout
    assert (tmp_path / "clip-alpha.mkv").is_file() and len(list((tmp_path / "alpha").glob("*.png"))) == 8
    quality = json.loads((tmp_path / "quality.json").read_text())
    line = next(x for x in first.stdout.splitlines() if x.startswith("demo: quality against the true alpha"))
    assert f"MAE {quality['mean']['mae']:.4f} IoU {quality['mean']['iou']:.4f}" in line
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["rows"] and bench["video"][0]["frames"] == 8
    stamps = {stage: (tmp_path / "runs" / stage / "best.pt").stat().st_mtime_ns for stage in ("caption", "spd", "spgm")}
    second = _demo(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "reusing the generated scenes" in second.stdout
    assert "reusing the export" in second.stdout and "reusing the clip" in second.stdout
    for stage, stamp in stamps.items():
        assert f"demo: reusing {tmp_path / 'runs' / stage / 'best.pt'}" in second.stdout
        assert (tmp_path / "runs" / stage / "best.pt").stat().st_mtime_ns == stamp


def test_demo_quality_line_comes_from_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spgim.demo import _quality
    from spgim.train.data.clip import render_clip

    truth = tmp_path / "clip-alpha.mkv"
    info = render_clip(tmp_path / "clip.mp4", frames=3, size=(64, 32), seed=3, alpha_path=truth)
    _quality(truth, truth, tmp_path / "perfect.json")
    perfect = json.loads((tmp_path / "perfect.json").read_text())["mean"]
    assert perfect["mae"] == 0 and perfect["iou"] == 1 and perfect["dtssd"] == 0
    assert "MAE 0.0000 IoU 1.0000 dtSSD 0.000" in capsys.readouterr().out
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    for index in range(3):
        cv2.imwrite(str(wrong / f"{index:06d}.png"), np.zeros((32, 64), np.uint8))
    _quality(wrong, truth, tmp_path / "wrong.json")
    scores = json.loads((tmp_path / "wrong.json").read_text())["mean"]
    # All-zero alpha: MAE is the mean of the clip's 8-bit alpha (written losslessly), IoU 0.
    expected = float(np.mean(info.alpha)) / 255
    assert abs(scores["mae"] - expected) < 2e-3 and scores["iou"] == 0
