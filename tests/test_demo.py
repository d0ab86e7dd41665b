"""``spgim demo`` (what ``make demo`` runs), shrunk: generate, fine-tune the reference pairs, evaluate, matte, reuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from spgim.train.config import get_config
from spgim.train.summary import model_summary

pytestmark = pytest.mark.slow  # the whole demo: trains, evaluates and mattes

SPGIM = str(Path(sys.executable).with_name("spgim"))


def _demo(out: Path) -> subprocess.CompletedProcess[str]:
    shrink = ["--scenes", "12", "--epochs", "1", "--workers", "0", "--clip-frames", "8", "--bench-iters", "1"]
    shrink += ["--live-clip-frames", "8"]
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
    assert "generated 12 scenes" in first.stdout
    # The paper model's counted size heads the demo (the table cites Table 6 beside it).
    total = model_summary(get_config("paper"), 512, 512)["params"]["total"]
    assert f"total{total / 1e6:>15.2f}" in first.stdout
    _check_fine_tuned(tmp_path / "runs", "tiny", first.stdout)
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
    assert bench["rows"] and bench["video"][0]["frames"] == 8 and bench["video"][0]["model"] == "tiny"
    _check_live_part(tmp_path, first.stdout, bench)
    assert "demo: wall time data" in first.stdout and "live" in first.stdout.splitlines()[-1]
    best = [tmp_path / "runs" / stage / "best.pt" for stage in ("spd", "spgm")]
    best += [tmp_path / "live" / "runs" / stage / "best.pt" for stage in ("spd", "spgm")]
    stamps = {path: path.stat().st_mtime_ns for path in best}
    second = _demo(tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "reusing the generated scenes" in second.stdout
    assert "reusing the export" in second.stdout and "reusing the clip" in second.stdout
    assert f"reusing the export in {tmp_path / 'live' / 'export'}" in second.stdout
    assert f"reusing the clip {tmp_path / 'live' / 'clip-720p.mp4'}" in second.stdout
    assert "demo: trained" not in second.stdout
    assert not any(x.startswith("exported ") for x in second.stdout.splitlines())
    for path, stamp in stamps.items():
        assert f"demo: reusing {path}" in second.stdout
        assert path.stat().st_mtime_ns == stamp


def _check_fine_tuned(runs: Path, config: str, stdout: str) -> None:
    """SPD and SPGM of ``config`` were fine-tuned from the shipped reference pair, not trained from scratch."""
    from spgim.reference import reference_checkpoint
    from spgim.train.checkpoint import load_checkpoint

    label = "" if config == "tiny" else f"{config} "
    for stage in ("spd", "spgm"):
        assert f"demo: trained {label}{stage}" in stdout
        payload = load_checkpoint(runs / stage / "best.pt")
        assert payload["config"]["name"] == config
        assert payload["extra"]["init"] == str(reference_checkpoint(stage, config))
    assert not (runs / "caption").exists()


def _check_live_part(out: Path, stdout: str, bench: dict) -> None:
    """The live model's files: checkpoints, the export's stream entry, the 720p composite, quality and bench row."""
    import av

    from spgim.runtime.artifacts import load_artifacts
    from spgim.train.config import MODEL_CONFIGS

    live = out / "live"
    _check_fine_tuned(live / "runs", "live", stdout)
    artifacts = load_artifacts(live / "export")  # the manifest, each sidecar and its size
    assert {(a.branch, a.format, a.precision) for a in artifacts} >= {
        (branch, fmt, "fp32") for branch in ("spd", "spgm") for fmt in ("onnx", "openvino", "torchscript")
    }
    for artifact in artifacts:
        if artifact.branch in ("spd", "spgm"):
            assert artifact.sidecar["config"]["name"] == "live"
            assert artifact.sidecar["export_size"] == [320, 192]
            stream = artifact.sidecar["stream"]
            assert {k: stream[k] for k in MODEL_CONFIGS["live"]["stream"]} == MODEL_CONFIGS["live"]["stream"]
    with av.open(str(live / "composite.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 8 and all(frame.shape == (720, 1280, 3) for frame in frames)
    with av.open(str(live / "clip-720p-alpha.mkv")) as container:
        truth = np.stack([frame.to_ndarray(format="gray") for frame in container.decode(video=0)])
    alpha = np.stack([_grey_png(path) for path in sorted((live / "alpha").glob("*.png"))])
    assert alpha.shape == truth.shape == (8, 720, 1280)
    quality = json.loads((live / "quality.json").read_text())
    mae = float(np.abs(alpha.astype(np.float64) - truth.astype(np.float64)).mean()) / 255
    assert abs(quality["mean"]["mae"] - mae) < 1e-4, (quality["mean"], mae)
    line = next(x for x in stdout.splitlines() if x.startswith("demo: quality against the true alpha clip-720p"))
    assert f"MAE {quality['mean']['mae']:.4f} IoU {quality['mean']['iou']:.4f}" in line
    row = bench["video"][1]
    assert row["model"] == "live" and row["frames"] == 8 and row["keyframe_interval"] == 8
    assert row["size"] == [1280, 720] and row["work_size"] == [320, 192]
    assert row["model_fps"] > 0 and row["end_to_end_fps"] > 0
    table = stdout.splitlines()
    header = next(i for i, x in enumerate(table) if x.startswith("live model, video"))
    assert f"{row['model_fps']:.2f}" in table[header + 1] and f"{row['end_to_end_fps']:.2f}" in table[header + 1]
    assert "1280x720" in table[header + 1] and "320x192" in table[header + 1]


def test_demo_quality_line_comes_from_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from spgim.demo import _quality
    from spgim.train.data.clips import render_clip

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


def _grey_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, path
    return image
