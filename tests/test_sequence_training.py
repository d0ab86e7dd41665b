"""``spgim train spgm-seq``: generated sequences, and SPGM trained on them closed-loop as a stream runs it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_pairs import random_pair

from spgim.train.data.clips import eased_clock, render_frames
from spgim.train.data.sequences import SEQUENCE_SEED_BASE, SequenceDataset
from spgim.train.distributed import DistInfo
from spgim.train.recipes import get_recipe

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
SIZE = (64, 64)


def test_eased_clocks_pause_reverse_and_start_at_zero() -> None:
    rng = np.random.default_rng(0)
    clocks = [eased_clock(40, rng) for _ in range(20)]
    speeds = [np.diff(clock) for clock in clocks]
    steps = np.concatenate(speeds)
    assert all(clock[0] == 0.0 for clock in clocks)
    assert (np.abs(steps) < 1e-9).any() and (steps < -0.5).any() and (steps > 1.5).any()
    # Eased: from one frame to the next the speed changes by at most 3/4 of the widest change (3, from 2 to -1).
    assert max(float(np.abs(np.diff(speed)).max()) for speed in speeds) <= 0.75 * 3.0


# sha256 (first 32 hex digits) of render_frames(10, (160, 96), 3)'s frames and alphas before eased motion existed.
STEADY_DIGESTS = ("9af9416deb841a04afc926c3a4ef3962", "b1f38dcd244415fc792a5332c9114ccd")


def test_steady_clips_are_what_they_were_and_eased_ones_differ() -> None:
    images, alphas, photo, names = render_frames(10, (160, 96), 3)
    digests = tuple(hashlib.sha256(np.stack(x).tobytes()).hexdigest()[:32] for x in (images, alphas))
    assert digests == STEADY_DIGESTS  # the demo's and the evaluation's clips did not change
    _, eased_alphas, eased_photo, eased_names = render_frames(10, (160, 96), 3, motion="eased")
    assert (eased_photo, eased_names) == (photo, names)  # the same scene, moved otherwise
    assert any(not np.array_equal(a, b) for a, b in zip(alphas, eased_alphas, strict=True))


def test_sequences_are_deterministic_seeded_apart_and_cut_where_they_say() -> None:
    data = SequenceDataset(12, frames=6, size=SIZE, seed=0, cut_share=0.5)
    first = data[3]
    assert first["image"].shape == (6, 3, 64, 64) and first["alpha"].shape == (6, 1, 64, 64)
    assert torch.equal(first["image"], data[3]["image"])
    assert data.sample_seed(0) >= SEQUENCE_SEED_BASE
    assert SequenceDataset(12, frames=6, size=SIZE, seed=1).sample_seed(0) == data.sample_seed(11) + 1
    cuts = [int(data[i]["cut"]) for i in range(12)]
    assert any(cuts) and not all(cuts)
    index = next(i for i, cut in enumerate(cuts) if cut)
    sample, cut = data[index], cuts[index]
    whole, *_ = render_frames(6, SIZE, data.sample_seed(index), motion="eased")
    assert torch.equal(sample["image"][cut - 1], torch.from_numpy(whole[cut - 1]).permute(2, 0, 1).float() / 255)
    assert not torch.equal(sample["image"][cut], torch.from_numpy(whole[cut]).permute(2, 0, 1).float() / 255)


def test_a_steady_share_moves_that_share_as_the_clip_command_does() -> None:
    eased = SequenceDataset(16, frames=5, size=SIZE, seed=2, cut_share=0.0)
    mixed = SequenceDataset(16, frames=5, size=SIZE, seed=2, cut_share=0.0, steady_share=0.5)
    steady = [i for i in range(16) if mixed.motion_draw(i) < 0.5]
    assert 0 < len(steady) < 16  # both motions are drawn
    for index in range(16):
        motion = "steady" if index in steady else "eased"
        frames, *_ = render_frames(5, SIZE, mixed.sample_seed(index), motion=motion)
        expected = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(mixed[index]["image"], expected), (index, motion)
        # The draw stands apart from the rest of a sample: without a steady share, the samples of before.
        assert torch.equal(eased[index]["image"], mixed[index]["image"]) == (motion == "eased")
    assert mixed.describe()["steady_share"] == 0.5
    with pytest.raises(ValueError, match="steady_share must be within"):
        SequenceDataset(4, frames=5, size=SIZE, steady_share=1.5)


def _stage(folder: Path, *, recurrent: bool, data: Path | None = None, **recipe: Any) -> Any:
    from spgim.train.stages import SPGMSequenceStage

    random_pair(folder, seed=4)
    overrides = {"seq_size": list(SIZE), "seq_frames": 6, "sequences_per_epoch": 4, "val_sequences": 1}
    overrides |= {"scenes_per_sequence": 0} | recipe
    return SPGMSequenceStage(
        data=data or folder / "no-data",
        config_name="tiny",
        recipe=get_recipe("tiny", "spgm-seq", **overrides),
        info=CPU,
        seed=0,
        spd_path=folder / "spd.pt",
        init=folder / "spgm.pt",
        recurrent=recurrent,
    )


def _batch(stage: Any, cuts: tuple[int, int]) -> dict[str, torch.Tensor]:
    samples = [stage.train_set[i] for i in range(2)]
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("image", "alpha")}
    return batch | {"cut": torch.tensor(cuts)}


class _Logged(torch.nn.Module):
    """A model that notes, at each call, how many SPGM calls came before (``module``: the model it runs)."""

    def __init__(self, module: torch.nn.Module, log: list[int], spgm_calls: list[int]) -> None:
        super().__init__()
        self.module, self.log, self.spgm_calls = module, log, spgm_calls

    def forward(self, *inputs: torch.Tensor) -> Any:
        self.log.append(len(self.spgm_calls))
        return self.module(*inputs)


def test_spd_runs_on_each_sequences_keyframes_and_cuts(tmp_path: Path) -> None:
    stage = _stage(tmp_path, recurrent=False, keyframe_interval=2)
    spgm_calls: list[int] = []
    spd_frames: list[int] = []
    stage.spd = _Logged(stage.spd, spd_frames, spgm_calls)
    spgm = _Logged(stage.model.eval(), spgm_calls, spgm_calls)
    with torch.no_grad():
        stage._closed_loop(spgm, _batch(stage, (0, 3)))
    assert len(spgm_calls) == 6
    # Sample 0: keyframes 0, 2, 4; sample 1: 0, 2, 3 (its cut), 5. SPD runs where either needs it.
    assert spd_frames == [0, 2, 3, 4, 5]


def test_a_recurrent_run_forgets_everything_at_a_cut(tmp_path: Path) -> None:
    stage = _stage(tmp_path, recurrent=True, keyframe_interval=2)
    for unit in stage.model.recurrent.values():  # a trained memory, not the zero start
        torch.nn.init.normal_(unit.residual.weight, std=0.5)
    stage.model.eval()
    joined = _batch(stage, (3, 3))
    second = {key: value[:, 3:] for key, value in joined.items() if key != "cut"} | {"cut": torch.tensor([0, 0])}
    with torch.no_grad():
        *_, through_cut = stage._closed_loop(stage.model, joined)
        *_, fresh = stage._closed_loop(stage.model, second)
        *_, no_reset = stage._closed_loop(stage.model, joined | {"cut": torch.tensor([0, 0])})
    for after, alone in zip(through_cut[3:], fresh, strict=True):
        torch.testing.assert_close(after, alone, atol=1e-6, rtol=0)
    assert not torch.allclose(no_reset[4], fresh[1], atol=1e-4)  # without the reset, the old scene lingers


@pytest.mark.slow
def test_training_reaches_the_memory_and_lowers_the_loss(tmp_path: Path) -> None:
    stage = _stage(tmp_path, recurrent=True, keyframe_interval=2)
    stage.model.train()
    batch = _batch(stage, (0, 4))
    norms = [m for m in stage.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    statistics = [m.running_mean.clone() for m in norms]
    optimizer = torch.optim.Adam(stage.model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = stage.loss(stage.model, batch)
        loss.backward()
        residuals = [unit.residual.weight.grad for unit in stage.model.recurrent.values()]
        assert all(grad is not None and float(grad.abs().sum()) > 0 for grad in residuals)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # BatchNorm keeps the initial pair's statistics; its scales learn.
    assert all(torch.equal(m.running_mean, before) for m, before in zip(norms, statistics, strict=True))
    assert any(m.weight.grad is not None and float(m.weight.grad.abs().sum()) > 0 for m in norms)
    numbers = stage.validate()
    assert set(numbers) == {"val_mae", "val_temporal_mse", "score"} and numbers["score"] > 0


def test_the_stage_trains_on_the_recipes_sequence_length_and_motion(tmp_path: Path) -> None:
    stage = _stage(tmp_path, recurrent=True, seq_frames=7, steady_share=1.0)
    assert stage.train_set.describe() | {"frames": 7, "steady_share": 1.0} == stage.train_set.describe()
    assert stage.train_set[0]["image"].shape[0] == 7


@pytest.mark.slow
def test_the_command_refuses_what_does_not_belong_to_the_stage(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    spgim = [sys.executable, "-m", "spgim", "train"]
    for extra, message in (
        (["spgm-seq"], "spgim train spgm-seq needs --spd"),
        (["spgm-seq", "--spd", "x.pt", "--crop", "64"], "--crop and --bg-per-fg shape image training"),
        (["spgm", "--spd", "x.pt", "--recurrent"], "--recurrent belongs to the spgm-seq stage"),
        (
            ["spgm-seq", "--spd", "x.pt", "--memory-lr-factor", "50"],
            "--memory-lr-factor and --memory-only belong to spgm-seq --recurrent",
        ),
        (["spgm-seq", "--spd", "x.pt", "--recurrent", "--memory-lr-factor", "0"], "must be positive, got 0.0"),
        (["spgm", "--spd", "x.pt", "--sequence-frames", "24"], "--sequence-frames, --steady-share and"),
        (["spgm-seq", "--spd", "x.pt", "--sequence-frames", "1"], "--sequence-frames must be at least 2, got 1"),
        (["spgm-seq", "--spd", "x.pt", "--steady-share", "2"], "--steady-share must be within [0, 1], got 2.0"),
        (["spgm", "--spd", "x.pt", "--train-only", "levels.2"], "--train-only belongs to the spgm-seq stage"),
        (
            ["spgm-seq", "--spd", "x.pt", "--recurrent", "--memory-only", "--train-only", "levels.2"],
            "give it or --train-only, not both",
        ),
    ):
        done = subprocess.run(
            [*spgim, *extra, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_the_recurrent_units_learn_at_their_own_rate(tmp_path: Path) -> None:
    stage = _stage(tmp_path, recurrent=True, lr=1e-5, memory_lr_factor=100.0)
    rest, memory = stage.param_groups()
    assert rest["lr"] == 1e-5 and memory["lr"] == pytest.approx(1e-3)
    recurrent = {id(p) for unit in stage.model.recurrent.values() for p in unit.parameters()}
    assert {id(p) for p in memory["params"]} == recurrent and not recurrent & {id(p) for p in rest["params"]}


def test_memory_only_trains_the_recurrent_units_and_nothing_else(tmp_path: Path) -> None:
    stage = _stage(tmp_path, recurrent=True, keyframe_interval=2, memory_only=True)
    (group,) = stage.param_groups()
    recurrent = {id(p) for unit in stage.model.recurrent.values() for p in unit.parameters()}
    assert {id(p) for p in group["params"]} == recurrent
    before = {name: p.detach().clone() for name, p in stage.model.named_parameters()}
    optimizer = torch.optim.Adam([group])
    optimizer.zero_grad()
    stage.loss(stage.model, _batch(stage, (0, 4))).backward()
    optimizer.step()
    moved = {name for name, parameter in stage.model.named_parameters() if not torch.equal(parameter, before[name])}
    # The residuals start at zero, so on the first step only they receive a gradient; nothing outside moves.
    assert moved == {name for name in before if name.startswith("recurrent.") and ".residual." in name}


@pytest.mark.slow
def test_train_only_trains_the_named_parts_with_the_memory_at_its_own_rate(tmp_path: Path) -> None:
    from spgim.errors import SpgimError

    stage = _stage(tmp_path, recurrent=True, keyframe_interval=2, trained_parts=["levels.0", "recurrent"], lr=1e-4)
    trained = {name for name, p in stage.model.named_parameters() if p.requires_grad}
    assert trained and all(name.startswith(("levels.0.", "recurrent.")) for name in trained)
    assert any(name.startswith("levels.0.") for name in trained) and any(n.startswith("recurrent.") for n in trained)
    rest, memory = stage.param_groups()
    assert rest["lr"] == 1e-4 and memory["lr"] == pytest.approx(1e-4 * stage.recipe["memory_lr_factor"])
    before = {name: p.detach().clone() for name, p in stage.model.named_parameters()}
    optimizer = torch.optim.Adam([rest, memory])
    optimizer.zero_grad()
    stage.loss(stage.model, _batch(stage, (0, 4))).backward()
    optimizer.step()
    moved = {name for name, parameter in stage.model.named_parameters() if not torch.equal(parameter, before[name])}
    assert moved and moved <= trained and any(name.startswith("levels.0.") for name in moved)
    with pytest.raises(SpgimError, match=r"SPGM has no part levels\.9 to train"):
        _stage(tmp_path / "other", recurrent=False, trained_parts=["levels.9"])


def test_a_recurrent_checkpoint_loads_as_recurrent(tmp_path: Path) -> None:
    from spgim.train.checkpoint import load_model
    from spgim.train.loop import run_training

    stage = _stage(tmp_path, recurrent=True, epochs=1, batch_size=2)
    run_training(stage, out_dir=tmp_path / "run", info=CPU, seed=0, workers=0)
    model = load_model(tmp_path / "run" / "last.pt", "spgm")
    assert model.state_names == ("state_os16", "state_os8", "state_os4")


@pytest.mark.slow
def test_scenes_beside_each_sequence_follow_the_epoch_and_add_the_image_loss(tmp_path: Path) -> None:
    from spgim.errors import SpgimError
    from spgim.train.data.synth import generate_dataset

    data = tmp_path / "data"
    generate_dataset(data, count=6, size=64, seed=3, test_fraction=0.34, workers=1)
    with pytest.raises(SpgimError, match="no-data/train, which does not exist"):
        _stage(tmp_path, recurrent=True, scenes_per_sequence=2, scene_crop=64)
    stage = _stage(tmp_path, recurrent=True, data=data, scenes_per_sequence=2, scene_crop=64, keyframe_interval=2)
    sample = stage.train_set[1]
    assert sample["scene_image"].shape == (2, 3, 64, 64) and sample["scene_alpha"].shape == (2, 1, 64, 64)
    assert torch.equal(sample["image"], stage.train_set.sequences[1]["image"])  # the sequence is untouched
    stage.train_set.set_epoch(1)
    assert not torch.equal(stage.train_set[1]["scene_image"], sample["scene_image"])  # other composites each epoch
    assert stage.train_set.describe()["scenes_per_sequence"] == 2

    samples = [stage.train_set[i] for i in range(2)]
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("image", "alpha", "scene_image", "scene_alpha")}
    batch["cut"] = torch.tensor([0, 0])
    stage.model.train()
    sequences_only = {key: batch[key] for key in ("image", "alpha", "cut")}
    stage.scene_loss.motion_generator.manual_seed(0)
    with_scenes = stage.loss(stage.model, batch)
    without = stage.loss(stage.model, sequences_only)
    stage.scene_loss.motion_generator.manual_seed(0)
    stage.scene_loss.guide_generator.manual_seed(0)
    scenes = stage.scene_loss(stage.model, batch["scene_image"].flatten(0, 1), batch["scene_alpha"].flatten(0, 1))
    assert float(scenes) > 0
    torch.testing.assert_close(with_scenes, without + stage.recipe["scene_weight"] * scenes, rtol=1e-4, atol=1e-5)
