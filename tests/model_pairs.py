"""The one way tests make a model pair: random weights of a configuration saved as checkpoints, and their export."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from spgim.cli import main
from spgim.train.checkpoint import save_checkpoint, weights_digest
from spgim.train.config import get_config
from spgim.train.models import build_model


def random_pair(
    folder: Path,
    config_name: str = "tiny",
    *,
    seed: int = 0,
    spd_extra: dict[str, Any] | None = None,
    recurrent: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Random-weight SPD and SPGM of ``config_name`` (eval mode), saved as ``folder/spd.pt`` and ``folder/spgm.pt``.

    The SPGM checkpoint records the SPD's digest, as training does, so the pair exports. ``recurrent`` makes the
    SPGM recurrent (``spgm.recurrent``); its units' residuals are then drawn at random instead of zero, so that
    the state shows in the alpha (a fresh recurrent SPGM computes what the stateless one does).
    """
    torch.manual_seed(seed)
    config = get_config(config_name)
    if recurrent is not None:
        config["spgm"]["recurrent"] = copy.deepcopy(recurrent)
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    for unit in getattr(spgm, "recurrent", {}).values():
        torch.nn.init.normal_(unit.residual.weight, std=0.5)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "spd.pt", branch="spd", config=config, model=spd, extra=spd_extra)
    extra = {"spd_digest": weights_digest(spd.state_dict())}
    save_checkpoint(folder / "spgm.pt", branch="spgm", config=config, model=spgm, extra=extra)
    return spd, spgm


def export_pair(folder: Path, out: Path, *options: str) -> Path:
    """``spgim export`` of ``folder``'s pair to ``out`` with ``options``; returns ``out``."""
    argv = ["export", "--spd", str(folder / "spd.pt"), "--spgm", str(folder / "spgm.pt"), "--out", str(out)]
    assert main([*argv, *options]) == 0
    return out


def export_tiny(folder: Path, *, formats: str = "onnx", precision: str = "fp32", seed: int = 0) -> Path:
    """A tiny random-weight SPG-IM exported to ``folder/model`` (dynamic sizes 64..512)."""
    random_pair(folder, seed=seed)
    options = ["--formats", formats, "--precision", precision, "--height", "128", "--width", "128", "--dynamic"]
    return export_pair(folder, folder / "model", *options, "--min-size", "64x64", "--max-size", "512x512")
