"""``spgim demo`` (what ``make demo`` runs), shrunk: generate, train three stages, evaluate, then reuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
