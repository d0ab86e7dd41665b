"""Video evaluation against true alpha: hand-computed scores, and ``spgim eval --video`` on real files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from spgim.cli import main
from spgim.errors import SpgimError
from spgim.train.metrics import grad
from spgim.train.video_metrics import evaluate_alpha_videos, score_alpha_arrays

# Three 4x4 frames. Truth: a 2x2 block whose corner (1, 1) is 0.75, still for two frames, then empty.
# Prediction: frame 0 gets that corner as 0.25 and a stray 0.5 at (3, 2); frame 1 is perfect;
# frame 2 is 0.25 everywhere.
G0 = np.array([[1, 1, 0, 0], [1, 0.75, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
P0 = np.array([[1, 1, 0, 0], [1, 0.25, 0, 0], [0, 0, 0, 0], [0, 0, 0.5, 0]])
TRUTH = np.stack([G0, G0, np.zeros((4, 4))])
PREDICTED = np.stack([P0, G0, np.full((4, 4), 0.25)])


def test_every_metric_matches_a_hand_computation_on_three_frames() -> None:
    scores = score_alpha_arrays(PREDICTED, TRUTH)

    assert scores.frames == 3
    # |p - g| is 0.5 at two pixels of frame 0 and 0.25 at all 16 pixels of frame 2.
    assert scores.mae == pytest.approx([1.0 / 16, 0.0, 0.25])
    assert scores.sad == pytest.approx([0.001, 0.0, 0.004])
    assert scores.mse == pytest.approx([0.5 / 16, 0.0, 0.0625])
    # Frame 0: 3 pixels >= 0.5 in both of 5 in either; frame 2: both masks empty.
    assert scores.iou == pytest.approx([0.6, 1.0, 1.0])
    # Conn, frame 0: (1, 1) leaves the common component at t = 0.3, so l = 0.2; d_p = 0.05 < 0.15 gives
    # phi_p = 1, d_g = 0.55 gives phi_g = 0.45; the stray 0.5 has l = 0: phi_p = 0.5, phi_g = 1.
    # Frame 2: l = 0 everywhere, phi_p = 0.75 and phi_g = 1 at 16 pixels.
    assert scores.conn == pytest.approx([1.05 / 1000, 0.0, 4.0 / 1000])
    # Grad is metrics.grad itself (checked against DIM in test_metrics.py); constant frames have none.
    assert scores.grad == pytest.approx([grad(P0, G0), 0.0, 0.0])
    assert scores.grad[0] > 0
    # dtSSD, t = 1: the truth is still; the prediction changes by +0.5 at (1, 1) and -0.5 at (3, 2).
    # t = 2: (p2 - p1) - (g2 - g1) is 0.25 at every pixel.
    dt1 = 100 * math.sqrt((0.25 + 0.25) / 16)
    dt2 = 100 * math.sqrt(0.0625)
    assert scores.dtssd == pytest.approx([dt1, dt2])
    assert dt1 == pytest.approx(17.677670)
    # Where the truth moves: nowhere at t = 1; at t = 2 four of the 16 pixels, each with the same error.
    assert scores.dtssd_moving_share == pytest.approx([0.0, 4 / 16])
    assert scores.means() == pytest.approx(
        {
            "mae": (0.0625 + 0.25) / 3,
            "iou": 2.6 / 3,
            "sad": 0.005 / 3,
            "mse": 0.09375 / 3,
            "grad": grad(P0, G0) / 3,
            "conn": 5.05e-3 / 3,
            "dtssd": (17.677670 + 25.0) / 2,
            "dtssd_moving_share": 0.125,
        }
    )


def test_prediction_equal_to_truth_scores_perfect() -> None:
    scores = score_alpha_arrays(TRUTH, TRUTH)
    means = scores.means()
    assert (means["mae"], means["iou"], means["dtssd"], means["sad"], means["conn"]) == (0, 1, 0, 0, 0)


def test_a_one_frame_late_copy_has_the_hand_computed_dtssd() -> None:
    # Truth: one pixel moving right along row 1. Prediction: the truth one frame late.
    truth = np.zeros((3, 4, 4))
    for t in range(3):
        truth[t, 1, t] = 1.0
    late = np.stack([truth[0], truth[0], truth[1]])
    scores = score_alpha_arrays(late, truth)
    # t = 1: the prediction is still, the truth moves: -1 at (1, 1), +1 at (1, 0) -> 2 / 16.
    # t = 2: (+1 at (1, 1), -1 at (1, 0)) - (+1 at (1, 2), -1 at (1, 1)) -> 1 + 4 + 1 = 6 / 16.
    expected = [100 * math.sqrt(2 / 16), 100 * math.sqrt(6 / 16)]
    assert scores.dtssd == pytest.approx(expected)
    assert scores.mean("dtssd") == pytest.approx((35.355339 + 61.237244) / 2)
    assert scores.mean("dtssd") > 0
    # A late matte errs where the truth moves: all of t = 1's error; at t = 2, 1 + 4 of 6 (not (1, 0), left behind).
    assert scores.dtssd_moving_share == pytest.approx([1.0, 5 / 6])


def test_one_frame_video_has_zero_dtssd() -> None:
    scores = score_alpha_arrays(TRUTH[:1], TRUTH[:1])
    assert scores.dtssd == []
    assert scores.mean("dtssd") == 0.0


@pytest.mark.parametrize(
    ("predicted", "truth", "words"),
    [
        (TRUTH, TRUTH[:2], "has 3, the truth has 2"),
        (TRUTH, TRUTH[:, :3], "the prediction is 4x4, the truth is 4x3"),
        (TRUTH * 2, TRUTH, "outside [0, 1]"),
    ],
)
def test_arrays_that_do_not_match_raise_one_line(predicted: np.ndarray, truth: np.ndarray, words: str) -> None:
    with pytest.raises(SpgimError, match=r"^[^\n]+$") as raised:
        score_alpha_arrays(predicted, truth)
    assert words in str(raised.value)


def test_png_folder_and_missing_file(tmp_path: Path) -> None:
    import cv2

    for index, frame in enumerate(TRUTH):
        cv2.imwrite(str(tmp_path / f"{index:06d}.png"), np.round(frame * 255).astype(np.uint8))
    scores = evaluate_alpha_videos(tmp_path, tmp_path)
    assert scores.frames == 3
    assert scores.mean("mae") == 0.0
    with pytest.raises(SpgimError, match="no such file"):
        evaluate_alpha_videos(tmp_path / "missing.mkv", tmp_path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("video-eval")
    argv = ["data", "clip", "--out", str(folder / "c.mp4"), "--alpha", str(folder / "a.mkv")]
    assert main([*argv, "--frames", "6", "--size", "96x64"]) == 0
    return folder


def test_eval_prediction_equal_to_truth_from_files(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = clip / "scores.json"
    argv = ["eval", "--video", str(clip / "c.mp4"), "--truth", str(clip / "a.mkv")]
    capsys.readouterr()
    assert main([*argv, "--prediction", str(clip / "a.mkv"), "--json", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("MAE 0.0000 IoU 1.0000 dtSSD 0.000 SAD 0.000 MSE 0.00000 Grad 0.000 Conn 0.000")
    assert line.endswith("(6 frames)")
    scores = json.loads(out.read_text())
    assert scores["frames"] == 6
    assert scores["mean"]["mae"] == 0 and scores["mean"]["iou"] == 1 and scores["mean"]["dtssd"] == 0
    assert {len(values) for key, values in scores["per_frame"].items() if not key.startswith("dtssd")} == {6}
    assert len(scores["per_frame"]["dtssd"]) == len(scores["per_frame"]["dtssd_moving_share"]) == 5


def _one_error_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err


def test_eval_truth_with_another_frame_count_or_size_fails_in_one_line(
    clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = clip / "other"
    other.mkdir(exist_ok=True)
    clip_argv = ["data", "clip", "--out", str(other / "c.mp4")]
    assert main([*clip_argv, "--alpha", str(other / "five.mkv"), "--frames", "5", "--size", "96x64"]) == 0
    assert main([*clip_argv, "--alpha", str(other / "wide.mkv"), "--frames", "6", "--size", "128x64"]) == 0
    prediction = ["--prediction", str(clip / "a.mkv")]
    err = _one_error_line(["eval", "--truth", str(other / "five.mkv"), *prediction], capsys)
    assert "has 6" in err and "has 5" in err
    err = _one_error_line(["eval", "--truth", str(other / "wide.mkv"), *prediction], capsys)
    assert "96x64" in err and "128x64" in err


@pytest.mark.parametrize(
    "extra",
    [
        ["--prediction", "a.mkv", "--model", "model"],  # both
        [],  # neither
        ["--prediction", "missing.mkv"],
        ["--prediction", "a.mkv", "--spd", "spd.pt"],
        ["--model", "model", "--keyframe-ramp", "two"],
    ],
)
def test_eval_bad_arguments_fail_in_one_line(
    clip: Path, extra: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(clip)
    _one_error_line(["eval", "--video", "c.mp4", "--truth", "a.mkv", *extra], capsys)


@pytest.mark.slow
def test_eval_with_a_model_mattes_every_frame(
    clip: Path, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.json"
    argv = ["eval", "--video", str(clip / "c.mp4"), "--truth", str(clip / "a.mkv"), "--model", str(model)]
    capsys.readouterr()
    assert main([*argv, "--backend", "onnxruntime", "--work-size", "128", "--json", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("(6 frames)")
    scores = json.loads(out.read_text())
    assert scores["frames"] == 6
    assert 0.0 <= scores["mean"]["iou"] <= 1.0
    # The CPU's default is the guided filter; bilinear upsampling scores the same model differently.
    bilinear = tmp_path / "bilinear.json"
    assert (
        main(
            [*argv, "--backend", "onnxruntime", "--work-size", "128", "--upsample", "bilinear", "--json", str(bilinear)]
        )
        == 0
    )
    assert json.loads(bilinear.read_text())["mean"]["mae"] != scores["mean"]["mae"]
