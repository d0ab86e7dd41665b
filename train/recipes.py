"""Training recipes per configuration and stage, as plain dicts.

The ``paper`` recipes are the paper's (Table 5; A.1 step decays; A.2 SGD + warm-up + cosine with
per-group maximum learning rates). Where the paper is silent (caption epochs, warm-up length,
the S(a*) blur), the value is ours and says so in a comment. ``tiny`` keeps the same shapes with
small numbers, for tests and the demo on a CPU.
"""

from __future__ import annotations

import copy
from typing import Any

from spgim.errors import SpgimError

STAGES = ("caption", "spd", "spgm", "spgm-seq")

# Paper A.1: epochs at which the learning rate is divided by 10, per dataset.
PAPER_MILESTONES: dict[str, dict[str, list[int]]] = {
    "composition-1k": {"spd": [20, 40], "spgm": [20, 30, 40]},
    "distinction-646": {"spd": [30, 60], "spgm": [40, 60, 80]},
    "human-2k": {"spd": [60, 80], "spgm": [80, 100, 120]},
    "multi-object-1k": {"spd": [40, 60, 80], "spgm": [60, 80, 100]},
}

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {
        "caption": {
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "lr": {"backbone": 0.2, "head": 1e-3},
            "schedule": "warmup-cosine",
            "warmup_fraction": 0.02,  # ours: the paper (following VirTex) warms up "at the beginning"
            "batch_size": 256,  # VirTex's batch size
            "epochs": 100,  # ours: the paper gives no epoch count for pre-training
        },
        "spd": {
            "optimizer": "adam",
            "lr": 1e-2,
            "schedule": "step",
            "milestones": PAPER_MILESTONES["multi-object-1k"]["spd"],
            "batch_size": 16,
            "crop": 512,
            "bg_per_fg": 100,
            "mask_sigma": 2.0,  # ours: the paper blurs S(a*) without giving sigma (mask pixels, OS4)
            "epochs": 100,
        },
        "spgm": {
            "optimizer": "adam",
            "lr": 5e-3,
            "schedule": "step",
            "milestones": PAPER_MILESTONES["multi-object-1k"]["spgm"],
            "batch_size": 4,
            "crop": 512,
            "bg_per_fg": 100,
            "loss_weights": [1.0, 2.0, 3.0],
            "epochs": 120,
        },
    },
    "tiny": {
        "caption": {
            "optimizer": "sgd",
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "lr": {"backbone": 0.3, "head": 0.06},
            "schedule": "warmup-cosine",
            "warmup_fraction": 0.05,
            "batch_size": 16,
            "epochs": 10,
        },
        "spd": {
            "optimizer": "adam",
            "lr": 3e-3,
            "schedule": "step",
            "milestones": [6],
            "batch_size": 8,
            "crop": 128,
            "bg_per_fg": 4,
            "mask_sigma": 1.0,
            "epochs": 8,
        },
        "spgm": {
            "optimizer": "adam",
            "lr": 2e-3,
            "schedule": "step",
            "milestones": [8],
            "batch_size": 8,
            "crop": 128,
            "bg_per_fg": 4,
            "loss_weights": [1.0, 2.0, 3.0],
            "epochs": 10,
        },
    },
}
# The live configuration trains as tiny does, on larger crops (its light encoders see 256 px).
RECIPES["live"] = copy.deepcopy(RECIPES["tiny"])
for _stage in ("spd", "spgm"):
    RECIPES["live"][_stage]["crop"] = 256
# Half of SPGM's guides are S(the truth moved a little), as a stream's propagated guide between keyframes.
RECIPES["live"]["spgm"]["propagated_guide"] = 0.5
# SPGM on generated sequences, closed-loop as a stream runs it (spgim.train.stages.SPGMSequenceStage): a
# fine-tune from a trained pair, so a low rate; 16 frames hold two keyframe intervals of the live defaults.
_SEQUENCES = {
    "optimizer": "adam",
    "lr": 3e-4,
    "schedule": "step",
    "milestones": [6],
    "epochs": 8,
    "batch_size": 2,
    "sequences_per_epoch": 200,
    "seq_frames": 12,
    "seq_size": [320, 192],  # the live working size of a 16:9 frame
    "seq_supersample": 2,  # rendered at twice the size and shrunk, as a stream's frames are
    "steady_share": 0.0,  # the share of sequences at the steady speeds of `spgim data clip` (the rest eased)
    "cut_share": 0.25,
    "temporal": 5.0,
    "val_sequences": 8,
    "loss_weights": [1.0, 2.0, 3.0],
    "keyframe_interval": None,  # None: the configuration's stream default (live 8; tiny 0, SPD on every frame)
    "memory_lr_factor": 10.0,  # the recurrent units' rate over the rest's: new, they start from zero
    "memory_only": False,  # train the recurrent units alone, the rest of SPGM frozen as initialised
    "trained_parts": None,  # or SPGM module names (e.g. ["levels.2", "recurrent"]): those alone train
    "frozen_batch_norm": True,  # BatchNorm keeps the initial pair's running statistics (a fine-tune on few scenes)
    # Still composites of DATA/train beside each sequence, trained with the image stage's loss, so that the few
    # generated clips do not make the model forget the varied scenes (SPGMSequenceStage); 0 trains on sequences only.
    "scenes_per_sequence": 2,
    "scene_weight": 1.0,
    "scene_crop": 128,
    "scene_bg_per_fg": 100,
    "shift_consistency": 3.0,  # the scenes' term, as the shipped pairs' last image stage had it
}
for _config in ("tiny", "live"):
    RECIPES[_config]["spgm-seq"] = copy.deepcopy(_SEQUENCES)
RECIPES["live"]["spgm-seq"]["propagated_guide"] = RECIPES["live"]["spgm"]["propagated_guide"]


def get_recipe(config_name: str, stage: str, *, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A copy of a recipe, with the A.1 milestones of ``preset`` and explicit overrides applied.

    Args:
        config_name: ``"paper"``, ``"tiny"`` or ``"live"``.
        stage: ``"caption"``, ``"spd"``, ``"spgm"`` or ``"spgm-seq"``.
        preset: a dataset of :data:`PAPER_MILESTONES` whose step decays to use.
        overrides: recipe fields; ``None`` values are ignored (unset command-line flags).
    """
    if config_name not in RECIPES or stage not in STAGES or stage not in RECIPES[config_name]:
        raise SpgimError(f"no recipe for config {config_name!r} stage {stage!r}")
    recipe = copy.deepcopy(RECIPES[config_name][stage])
    recipe.setdefault("max_steps_per_epoch", None)  # a cap for smoke runs; None = the whole epoch
    if stage == "spgm":
        recipe.setdefault("propagated_guide", 0.0)  # share of guides made from the moved truth (live: 0.5)
        recipe.setdefault("shift_consistency", 0.0)  # weight of the moved-crop consistency term (0: off)
    if preset is not None:
        if preset not in PAPER_MILESTONES:
            raise SpgimError(f"unknown schedule preset {preset!r}; choose one of {', '.join(PAPER_MILESTONES)}")
        if stage == "caption":
            raise SpgimError("schedule presets are step decays of the spd and spgm stages")
        recipe["milestones"] = list(PAPER_MILESTONES[preset][stage])
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in recipe:
            raise SpgimError(f"the {stage} recipe has no field {key!r}")
        if key == "lr" and isinstance(recipe["lr"], dict):
            recipe["lr"] = {group: float(value) * lr / max(recipe["lr"].values()) for group, lr in recipe["lr"].items()}
            continue
        recipe[key] = value
    return recipe


def lr_factor(step: int, steps_per_epoch: int, total_steps: int, recipe: dict[str, Any]) -> float:
    """The learning-rate multiplier at optimisation step ``step`` (0-based).

    ``warmup-cosine``: linear warm-up over ``warmup_fraction`` of all steps, then cosine to 0.
    ``step``: 0.1 to the number of milestones (in epochs) already passed.
    """
    import math

    if recipe["schedule"] == "warmup-cosine":
        warmup = max(1, int(total_steps * recipe["warmup_fraction"]))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    epoch = step // max(1, steps_per_epoch)
    return 0.1 ** sum(1 for milestone in recipe["milestones"] if epoch >= milestone)
