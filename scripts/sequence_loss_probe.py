"""The sequence fine-tune's loss, part by part, on fixed batches: of checkpoints, or during a short probe run.

    .venv/bin/python scripts/sequence_loss_probe.py --data SCENES [--checkpoint FILE ...]
    .venv/bin/python scripts/sequence_loss_probe.py --data SCENES --steps 100 [--lr 1e-4] [--bn frozen|train]
        [--sequence-weight 1] [--scenes 2] [--recurrent] [--memory-lr-factor 10] [--every 25] [--threads 1]

``spgim train spgm-seq`` reports its training loss on each step's own batch, which changes from step to step; a
loss that rises over a run may be the data's or the model's. Here the batches are fixed: six batches of two
training sequences (the ``live`` recipe's, seed 0) with two still composites of ``SCENES/train`` each, drawn once.
Each line of output (JSON) holds the three parts of ``spgm-seq``'s loss on them, the model in training mode with
BatchNorm on its running statistics (as the stage trains): ``frame`` (Eq. 6 over the closed-loop frames),
``temporal5`` (5 x the temporal MSE) and ``scene`` (the image stage's loss on the composites), and their sum.

Without ``--steps`` it scores the shipped live SPGM and each ``--checkpoint`` (recurrent ones with ``--recurrent``,
whose fresh memory leaves the shipped SPGM's output as it is). With ``--steps`` it trains the
shipped live pair on other batches of the same sequences and composites, Adam as the stage's recipe, and scores
the fixed batches every ``--every`` steps: ``--sequence-weight 0`` trains on the composites alone, ``--scenes 0``
on the sequences alone, ``--bn train`` with batch statistics. Random numbers (the guides, the motions, the
batches) are seeded, so two runs with the same flags print the same numbers on one machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spgim.train.checkpoint import load_checkpoint
from spgim.train.distributed import DistInfo
from spgim.train.loop import build_optimizer
from spgim.train.recipes import get_recipe
from spgim.train.stages import SceneLoss, SPGMSequenceStage, hold_batch_norm_statistics

WEIGHTS = Path(__file__).resolve().parents[1] / "spgim" / "weights"
SEQUENCES = 600  # sequences the probe draws from, as pilot runs' --sequences 600
FIXED = 6  # fixed batches scored


def _running_statistics(model: nn.Module) -> None:
    """Training mode, BatchNorm on its running statistics (the stage's frozen BatchNorm)."""
    model.train()
    hold_batch_norm_statistics(model)


def _batch(stage: SPGMSequenceStage, indices: list[int]) -> dict[str, torch.Tensor]:
    samples = [stage.train_set[index] for index in indices]
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


def _parts(
    stage: SPGMSequenceStage, recipe: dict[str, Any], batches: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """The loss's parts on ``batches``, the composites' guides and motions drawn from the same seed every time."""
    model = stage.model
    _running_statistics(model)
    scenes = SceneLoss(stage.spd, stage.guide_sigma, recipe, 0)
    frame = temporal = scene = 0.0
    with torch.no_grad():
        for batch in batches:
            frame_loss, change_loss, _ = stage._closed_loop(model, batch)
            images, targets = batch["scene_image"].flatten(0, 1), batch["scene_alpha"].flatten(0, 1)
            frame += float(frame_loss)
            temporal += float(recipe["temporal"]) * float(change_loss)
            scene += float(scenes(model, images, targets))
    count = len(batches)
    parts = {"frame": frame / count, "temporal5": temporal / count, "scene": scene / count}
    return {key: round(value, 4) for key, value in {**parts, "total": sum(parts.values())}.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the scenes (spgim data synth) with a train split")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[], help="an spgm checkpoint to score")
    parser.add_argument("--steps", type=int, default=0, help="train this many steps from the shipped pair")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--bn", choices=("frozen", "train"), default="frozen")
    parser.add_argument("--sequence-weight", type=float, default=1.0, help="0: train on the composites alone")
    parser.add_argument("--scenes", type=int, choices=(0, 1, 2), default=2, help="composites trained beside a sequence")
    parser.add_argument("--recurrent", action="store_true")
    parser.add_argument("--memory-lr-factor", type=float, default=10.0)
    parser.add_argument("--every", type=int, default=25, help="score the fixed batches every this many steps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe = get_recipe("live", "spgm-seq", lr=args.lr, sequences_per_epoch=SEQUENCES)
    recipe.update(frozen_batch_norm=args.bn == "frozen", memory_lr_factor=args.memory_lr_factor)
    stage = SPGMSequenceStage(
        data=args.data,
        config_name="live",
        recipe=recipe,
        info=DistInfo(0, 1, 0, torch.device("cpu")),
        seed=0,
        spd_path=WEIGHTS / "live-spd.pt",
        init=WEIGHTS / "live-spgm.pt",
        recurrent=args.recurrent,
    )
    stage.train_set.set_epoch(0)  # type: ignore[union-attr]
    order = [int(i) for i in torch.randperm(SEQUENCES, generator=torch.Generator().manual_seed(5))]
    fixed = [_batch(stage, order[2 * i : 2 * i + 2]) for i in range(FIXED)]
    training = order[2 * FIXED :]
    print(json.dumps({"model": "shipped live SPGM", "step": 0, **_parts(stage, recipe, fixed)}), flush=True)
    for checkpoint in args.checkpoint:
        weights = load_checkpoint(checkpoint, branch="spgm")["state_dict"]
        if any(name.startswith("recurrent.") for name in weights) != args.recurrent:
            raise SystemExit(f"{checkpoint}: score a recurrent checkpoint with --recurrent, and only those")
        stage.model.load_state_dict(weights)
        print(json.dumps({"model": str(checkpoint), **_parts(stage, recipe, fixed)}), flush=True)
    if not args.steps:
        return
    optimizer = build_optimizer(recipe, stage.param_groups())
    began, losses = time.perf_counter(), []
    for step in range(1, args.steps + 1):
        start = (2 * step) % (len(training) - 1)
        batch = _batch(stage, training[start : start + 2])
        if args.bn == "frozen":
            _running_statistics(stage.model)
        else:
            stage.model.train()
        frame_loss, change_loss, _ = stage._closed_loop(stage.model, batch)
        loss = args.sequence_weight * (frame_loss + float(recipe["temporal"]) * change_loss)
        if args.scenes:
            images = batch["scene_image"][:, : args.scenes].flatten(0, 1)
            targets = batch["scene_alpha"][:, : args.scenes].flatten(0, 1)
            loss = loss + stage.scene_loss(stage.model, images, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % args.every == 0:
            seconds = (time.perf_counter() - began) / step
            recent = sum(losses[-args.every :]) / args.every
            scored = _parts(stage, recipe, fixed)
            print(json.dumps({"step": step, "train_loss": round(recent, 4), "s_per_step": round(seconds, 2), **scored}))


if __name__ == "__main__":
    main()
