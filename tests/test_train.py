"""The three training stages on a generated set: losses fall, resume is exact, torchrun works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from spgim.cli import main
from spgim.errors import SpgimError
from spgim.train.checkpoint import load_checkpoint, load_model
from spgim.train.config import get_config
from spgim.train.data.matting import MattingTestDataset
from spgim.train.data.synth import generate_dataset
from spgim.train.distributed import DistInfo
from spgim.train.evaluate import validation_sad
from spgim.train.models import build_model, saliency_target
from spgim.train.recipes import get_recipe
from spgim.train.stages import SPGMStage, _warp, load_branch_weights

pytestmark = pytest.mark.slow  # whole training runs

BIN = Path(sys.executable).parent
SMALL = ["--config", "tiny", "--workers", "0", "--crop", "64", "--bg-per-fg", "2", "--batch-size", "4"]


def _log(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _epoch_means(run: Path) -> list[float]:
    records = _log(run)
    epochs = sorted({r["epoch"] for r in records})
    return [sum(r["loss"] for r in records if r["epoch"] == e) / sum(r["epoch"] == e for r in records) for e in epochs]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes") / "data"
    generate_dataset(root, count=20, size=96, seed=3, test_fraction=0.2, workers=1)
    return root


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    caption = ["train", "caption", "--data", str(data), "--config", "tiny", "--workers", "0", "--batch-size", "8"]
    assert main([*caption, "--out", str(out / "caption"), "--epochs", "6"]) == 0
    spd = ["train", "spd", "--data", str(data), *SMALL, "--init", str(out / "caption" / "best.pt")]
    assert main([*spd, "--out", str(out / "spd"), "--epochs", "6"]) == 0
    spgm = ["train", "spgm", "--data", str(data), *SMALL, "--spd", str(out / "spd" / "best.pt")]
    assert main([*spgm, "--out", str(out / "spgm"), "--epochs", "6"]) == 0
    return out


@pytest.mark.parametrize("stage", ["caption", "spd", "spgm"])
def test_each_stage_loss_falls(runs: Path, stage: str) -> None:
    means = _epoch_means(runs / stage)
    assert len(means) == 6
    assert means[-1] < 0.8 * means[0], means
    for name in ("last.pt", "best.pt"):
        payload = load_checkpoint(runs / stage / name, branch=stage)
        assert payload["extra"]["train_state"]["epoch"] >= 1
    assert any((runs / stage / "tb").iterdir())


def test_spd_starts_from_the_caption_front_end(data: Path, runs: Path, tmp_path: Path) -> None:
    caption = load_checkpoint(runs / "caption" / "best.pt", branch="caption")
    spd = load_checkpoint(runs / "spd" / "best.pt", branch="spd")
    assert spd["extra"]["init"] == str(runs / "caption" / "best.pt")
    # A one-step run with a zero learning rate keeps the caption front-end's weights exactly.
    argv = ["train", "spd", "--data", str(data), *SMALL, "--init", str(runs / "caption" / "best.pt")]
    assert main([*argv, "--out", str(tmp_path), "--epochs", "1", "--max-steps-per-epoch", "1", "--lr", "0"]) == 0
    fresh = load_checkpoint(tmp_path / "last.pt")["state_dict"]
    for name, value in caption["state_dict"].items():
        if name.startswith("backbone.") and "running" not in name and "num_batches" not in name:
            assert torch.equal(fresh[name], value), name


@pytest.mark.parametrize("stage", ["spd", "spgm"])
def test_fine_tuning_starts_from_a_checkpoint_of_the_branch(data: Path, runs: Path, tmp_path: Path, stage: str) -> None:
    start = runs / stage / "best.pt"
    base = ["train", stage, "--data", str(data), "--out", str(tmp_path / "tuned")]
    if stage == "spgm":
        base += ["--spd", str(runs / "spd" / "best.pt")]
    # One step at learning rate 0 keeps every learned weight of the starting checkpoint.
    short = ["--epochs", "1", "--max-steps-per-epoch", "1", "--lr", "0"]
    assert main([*base, *SMALL, *short, "--init", str(start)]) == 0
    tuned = load_checkpoint(tmp_path / "tuned" / "last.pt", branch=stage)
    assert tuned["extra"]["init"] == str(start)
    for name, value in load_checkpoint(start)["state_dict"].items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(tuned["state_dict"][name], value), name
    # A checkpoint of another branch, or one made for another configuration, is one line.
    wrong = runs / ("spgm" if stage == "spd" else "caption") / "best.pt"
    # spgm: the basic variant's SPGM has no TST; spd: the live configuration's SPD another encoder.
    other = [*SMALL, "--variant", "basic"] if stage == "spgm" else ["--config", "live"]
    for argv, message in (
        ([*base, *SMALL, "--init", str(wrong)], str(wrong)),
        ([*base, *other, "--init", str(start)], f"--init {start} was made for another configuration"),
    ):
        result = _spgimrun(*argv)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_fine_tune_may_change_where_spgms_last_level_runs(data: Path, runs: Path, tmp_path: Path) -> None:
    # refine_stride moves the last decoder level between the half-size and the full-size image: same weights.
    start = runs / "spgm" / "best.pt"
    payload = load_checkpoint(start, branch="spgm")

    def tiny(**spgm: Any) -> dict[str, Any]:
        config = get_config("tiny")
        config["spgm"].update(spgm)
        return config

    for stride in (1, 2):
        config = tiny(refine_stride=stride)
        model = build_model("spgm", config)
        load_branch_weights(model, {**payload, "config": tiny(refine_stride=3 - stride)}, config, "spgm", start)
        assert model.refine_stride == stride
        for name, value in payload["state_dict"].items():
            assert torch.equal(model.state_dict()[name], value), name
    other = {**payload, "config": tiny(refine_stride=2, aft_separable=3)}
    with pytest.raises(SpgimError, match=r"was made for another configuration: spgm\.aft_separable"):
        load_branch_weights(build_model("spgm", tiny()), other, tiny(), "spgm", start)
    # From the command line: one step at rate 0 keeps the weights and records the new stride.
    argv = ["train", "spgm", "--data", str(data), *SMALL, "--spd", str(runs / "spd" / "best.pt"), "--init", str(start)]
    short = ["--epochs", "1", "--max-steps-per-epoch", "1", "--lr", "0", "--out", str(tmp_path / "half")]
    assert main([*argv, *short, "--refine-stride", "2"]) == 0
    tuned = load_checkpoint(tmp_path / "half" / "last.pt", branch="spgm")
    assert tuned["config"]["spgm"]["refine_stride"] == 2 and "refine_stride" not in payload["config"]["spgm"]
    for name, value in payload["state_dict"].items():
        if "running" not in name and "num_batches" not in name:
            assert torch.equal(tuned["state_dict"][name], value), name
    for wrong, message in (
        (["train", "spd", "--data", str(data), *SMALL, "--refine-stride", "1"], "belong to the spgm stage"),
        ([*argv, "--refine-stride", "3"], "--refine-stride must be 1 or 2, got 3"),
        ([*argv, "--resume", str(tmp_path / "half" / "last.pt"), "--refine-stride", "1"], "a run being resumed"),
    ):
        result = _spgimrun(*wrong, "--out", str(tmp_path / "refused"))
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_propagated_guides_replace_a_share_of_spd_masks(data: Path, runs: Path) -> None:
    def stage(share: float) -> SPGMStage:
        recipe = get_recipe("tiny", "spgm", crop=64, propagated_guide=share)
        info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
        spd = runs / "spd" / "best.pt"
        return SPGMStage(data=data, config_name="tiny", recipe=recipe, info=info, seed=0, spd_path=spd)

    alpha = torch.stack([stage(0.0).train_set[i]["alpha"] for i in range(6)])
    mask = torch.full((6, 1, 16, 16), 0.25)
    assert stage(0.0).scene_loss._mix_propagated_guides(mask, alpha, 0.0) is mask
    truth = saliency_target(alpha, (16, 16), stage(1.0).scene_loss.guide_sigma)
    guides = stage(1.0).scene_loss._mix_propagated_guides(mask, alpha, 1.0)
    assert torch.equal(guides, stage(1.0).scene_loss._mix_propagated_guides(mask, alpha, 1.0))  # seeded
    # Every guide is S(truth) moved a little: close to it, never the SPD mask, not all exactly S(truth).
    assert not bool((guides == 0.25).all(dim=(1, 2, 3)).any())
    differences = (guides - truth).abs().mean(dim=(1, 2, 3))
    assert float(differences.max()) < 0.05 and float(differences.max()) > 1e-4, differences
    half = stage(0.5).scene_loss._mix_propagated_guides(mask, alpha, 0.5)
    kept = (half == 0.25).all(dim=(1, 2, 3))
    assert 0 < int(kept.sum()) < 6, kept


def test_shift_consistency_moves_crops_a_little_and_adds_the_drift(data: Path, runs: Path) -> None:
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    spd = runs / "spd" / "best.pt"

    def stage(weight: float) -> SPGMStage:
        recipe = get_recipe("tiny", "spgm", crop=64, shift_consistency=weight)
        return SPGMStage(data=data, config_name="tiny", recipe=recipe, info=info, seed=0, spd_path=spd)

    # A dot at the centre moves by the shift alone (turn and scale are about the centre): at most 4 px each way
    # (and a little for bilinear sampling).
    image = torch.zeros(16, 1, 64, 64)
    image[:, :, 31:33, 31:33] = 1.0
    grid, valid = stage(1.0).scene_loss._small_motion(image)
    moved = _warp(image, grid)
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    weights = moved[:, 0] / moved[:, 0].sum((1, 2), keepdim=True)
    centre = torch.stack([(weights * xs).sum((1, 2)), (weights * ys).sum((1, 2))], 1)
    offset = (centre - 31.5).abs()
    assert float(offset.max()) <= 4.3 and float(offset.max()) > 1.0, offset
    assert 0.7 < float(valid.mean()) < 1.0 and set(valid.unique().tolist()) == {0.0, 1.0}
    # The same batch (and guides: tiny has no propagated ones) scores higher by the moved crop and the drift.
    plain, consistent = stage(0.0), stage(5.0)
    consistent.model.load_state_dict(plain.model.state_dict())
    batch = {key: torch.stack([plain.train_set[i][key] for i in range(4)]) for key in ("image", "alpha")}
    plain.model.train()
    consistent.model.train()
    with torch.no_grad():
        base = float(plain.loss(plain.model, batch))
        both = float(consistent.loss(consistent.model, batch))
    assert both > base * 1.5, (base, both)  # the moved crop's own alpha loss, about base, plus the drift


def test_shift_consistency_flag_is_recorded_and_refused_where_it_does_not_belong(
    data: Path, runs: Path, tmp_path: Path
) -> None:
    spgm = ["train", "spgm", "--data", str(data), *SMALL, "--spd", str(runs / "spd" / "best.pt")]
    one_step = ["--epochs", "1", "--max-steps-per-epoch", "1"]
    assert main([*spgm, "--out", str(tmp_path / "s"), *one_step, "--shift-consistency", "2.5"]) == 0
    assert load_checkpoint(tmp_path / "s" / "last.pt")["extra"]["train_state"]["recipe"]["shift_consistency"] == 2.5
    spd = ["train", "spd", "--data", str(data), *SMALL, "--out", str(tmp_path / "d"), *one_step]
    for argv, message in (
        ([*spd, "--shift-consistency", "1"], "belong to the spgm stage"),
        ([*spgm, "--out", str(tmp_path / "n"), *one_step, "--shift-consistency", "-1"], "must be 0 or more"),
    ):
        result = _spgimrun(*argv)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_spgm_validation_sad_halves_after_a_short_run(data: Path, runs: Path) -> None:
    config = get_config("tiny")
    spd = load_model(runs / "spd" / "best.pt", "spd").eval()
    torch.manual_seed(0)
    untrained = validation_sad(spd, build_model("spgm", config).eval(), MattingTestDataset(data), torch.device("cpu"))
    trained = load_checkpoint(runs / "spgm" / "best.pt")["extra"]["train_state"]["best_score"]
    print(f"validation SAD: untrained {untrained:.3f}, after 6 short epochs {trained:.3f}")
    assert trained <= 0.5 * untrained
    frozen = load_checkpoint(runs / "spgm" / "best.pt")["extra"]
    assert frozen["spd_checkpoint"] == str(runs / "spd" / "best.pt")


def test_resume_continues_exactly(data: Path, runs: Path, tmp_path: Path) -> None:
    argv = ["train", "spgm", "--data", str(data), *SMALL, "--spd", str(runs / "spd" / "best.pt")]
    assert main([*argv, "--out", str(tmp_path / "whole"), "--epochs", "2"]) == 0
    assert main([*argv, "--out", str(tmp_path / "split"), "--epochs", "1"]) == 0
    assert (
        main(
            [*argv, "--out", str(tmp_path / "split"), "--resume", str(tmp_path / "split" / "last.pt"), "--epochs", "2"]
        )
        == 0
    )
    whole, split = _log(tmp_path / "whole"), _log(tmp_path / "split")
    assert [r["global_step"] for r in split] == [r["global_step"] for r in whole]
    next_step = len([r for r in whole if r["epoch"] == 1])
    assert split[next_step]["loss"] == pytest.approx(whole[next_step]["loss"], rel=1e-6, abs=1e-7)
    for a, b in zip(whole, split, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


def test_ctrl_c_saves_a_resumable_checkpoint_mid_epoch(data: Path, runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [
        str(BIN / "spgim"),
        "train",
        "spd",
        "--data",
        str(data),
        *SMALL,
        "--out",
        str(run),
        "--epochs",
        "3",
        "--bg-per-fg",
        "6",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (run / "log.jsonl").is_file() and len((run / "log.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "resume with --resume" in stderr and "Traceback" not in stderr
    state = load_checkpoint(run / "last.pt")["extra"]["train_state"]
    done = state["global_step"]
    assert done >= 3 and len(_log(run)) == done
    assert (
        main(
            ["train", "spd", "--data", str(data), "--out", str(run), "--resume", str(run / "last.pt"), "--workers", "0"]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "spd",
                "--data",
                str(data),
                *SMALL,
                "--out",
                str(tmp_path / "whole"),
                "--epochs",
                "3",
                "--bg-per-fg",
                "6",
            ]
        )
        == 0
    )
    resumed, whole = _log(run), _log(tmp_path / "whole")
    assert [r["global_step"] for r in resumed] == [r["global_step"] for r in whole]
    assert resumed[done]["loss"] == pytest.approx(whole[done]["loss"], rel=1e-6, abs=1e-7)


def test_torchrun_two_processes_train_one_spgm_epoch(data: Path, runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    argv = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "spgim",
        "train",
        "spgm",
        "--data",
        str(data),
        *SMALL,
        "--spd",
        str(runs / "spd" / "best.pt"),
        "--out",
        str(run),
        "--epochs",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt"]
    state = load_checkpoint(run / "last.pt", branch="spgm")["extra"]["train_state"]
    assert state["epoch"] == 1
    single_steps = len([r for r in _log(runs / "spgm") if r["epoch"] == 1])
    # Each of the two processes sees half the samples: half the steps, written once by rank 0.
    assert len(_log(run)) == state["global_step"] == single_steps // 2
    assert result.stdout.count("spgm epoch 1/1") == 1


def test_eval_writes_metrics_split_single_and_multi(data: Path, runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--spd",
                str(runs / "spd" / "best.pt"),
                "--spgm",
                str(runs / "spgm" / "best.pt"),
                "--data",
                str(data),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    whole = result["whole_image"]
    assert whole["all"]["count"] == whole["single"]["count"] + whole["multi"]["count"] == 4
    assert whole["all"]["sad"] > 0 and result["unknown_region"]["all"]["count"] == 4
    assert {"sad", "mse", "grad", "conn", "name", "multi_object"} <= set(result["images"][0])


def _spgimrun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "spgim"), *args], capture_output=True, text=True, timeout=300, check=False)


def test_pair_and_config_mismatches_are_refused(data: Path, runs: Path, tmp_path: Path) -> None:
    other_spd = tmp_path / "other"
    assert (
        main(
            [
                "train",
                "spd",
                "--data",
                str(data),
                *SMALL,
                "--out",
                str(other_spd),
                "--epochs",
                "1",
                "--max-steps-per-epoch",
                "1",
            ]
        )
        == 0
    )
    result = _spgimrun(
        "eval", "--spd", str(other_spd / "last.pt"), "--spgm", str(runs / "spgm" / "best.pt"), "--data", str(data)
    )
    assert result.returncode != 0 and "trained with another SPD" in result.stderr
    result = _spgimrun(
        "train",
        "spgm",
        "--data",
        str(data),
        "--config",
        "paper",
        "--out",
        str(tmp_path / "x"),
        "--spd",
        str(runs / "spd" / "best.pt"),
    )
    assert result.returncode != 0 and "was made for another configuration: spd." in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _broken(tmp_path: Path, data: Path, breakage: str) -> Path:
    import shutil

    root = tmp_path / breakage
    shutil.copytree(data, root)
    if breakage == "alpha-without-fg":
        next(iter(sorted((root / "train" / "fg").iterdir()))).unlink()
    elif breakage == "corrupt-image":
        for path in (root / "train" / "alpha").iterdir():
            path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif breakage == "missing-folder":
        shutil.rmtree(root / "train" / "bg")
    return root


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("alpha-without-fg", "alpha"),
        ("corrupt-image", "cannot read image"),
        ("missing-folder", "bg"),
    ],
)
def test_broken_data_gets_one_clear_line(data: Path, tmp_path: Path, breakage: str, message: str) -> None:
    root = _broken(tmp_path, data, breakage)
    result = _spgimrun(
        "train",
        "spd",
        "--data",
        str(root),
        "--config",
        "tiny",
        "--out",
        str(tmp_path / "run"),
        "--workers",
        "2",
        "--crop",
        "64",
        "--epochs",
        "1",
    )
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
