"""One checkpoint format for every branch (caption, SPD, SPGM).

A checkpoint is a dict of plain data: ``format``, ``format_version``, ``package_version``,
``branch``, the whole model ``config``, the ``state_dict`` and optional ``extra`` data (training
state, links to other checkpoints). It is written atomically (temp file, fsync, rename) and read
with ``torch.load(weights_only=True)``, so a file carrying pickled objects that would run code is
refused rather than executed.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spgim import __version__
from spgim.errors import SpgimError

from .config import config_differences

CHECKPOINT_FORMAT = "spgim-checkpoint"
CHECKPOINT_VERSION = 1

# The configuration sections each branch's weights depend on.
BRANCH_SECTIONS: dict[str, tuple[str, ...]] = {
    "caption": ("spd", "caption"),
    "spd": ("spd",),
    "spgm": ("spd", "spgm"),
}


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    branch: str,
    config: dict[str, Any],
    model: nn.Module,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its path.

    Args:
        path: destination file (its folder is created).
        branch: ``"caption"``, ``"spd"`` or ``"spgm"``.
        config: the whole model configuration the model was built from.
        model: the model (a DistributedDataParallel wrapper is unwrapped).
        extra: more plain data (tensors, numbers, strings, lists, dicts) to store alongside.
    """
    if branch not in BRANCH_SECTIONS:
        raise ValueError(f"unknown branch {branch!r}")
    module = getattr(model, "module", model)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "package_version": __version__,
        "branch": branch,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "extra": extra or {},
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    branch: str | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read and validate a checkpoint.

    Args:
        path: the file.
        branch: if given, the branch the checkpoint must hold.
        config: if given, the configuration it must match (only the sections its branch uses).

    Returns: the checkpoint dict.

    Raises:
        SpgimError: missing, unreadable or foreign file, pickled code, wrong branch or config.
    """
    source = Path(path)
    if not source.is_file():
        raise SpgimError(f"checkpoint {source} does not exist")
    if not zipfile.is_zipfile(source):
        raise SpgimError(f"checkpoint {source} is unreadable or truncated (not a torch.save archive)")
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        culprit = next((ln.strip() for ln in str(error).splitlines() if "GLOBAL" in ln), "")
        raise SpgimError(
            f"refusing checkpoint {source}: it holds pickled objects that could run code ({culprit[:120]})"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise SpgimError(f"checkpoint {source} is unreadable or truncated ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise SpgimError(f"{source} is not an spgim checkpoint")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise SpgimError(
            f"checkpoint {source} has format version {payload.get('format_version')}, "
            f"this spgim reads version {CHECKPOINT_VERSION}"
        )
    found = payload.get("branch")
    if branch is not None and found != branch:
        raise SpgimError(f"checkpoint {source} holds the {found} branch, expected {branch}")
    if config is not None:
        sections = BRANCH_SECTIONS[str(found)]
        differences = config_differences(
            {s: config.get(s) for s in sections}, {s: payload["config"].get(s) for s in sections}
        )
        if differences:
            more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
            raise SpgimError(f"checkpoint {source} was made for another configuration: {differences[0]}{more}")
    return payload


def load_model(path: str | os.PathLike[str], branch: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build the branch's model from a checkpoint's own configuration and load its weights."""
    from .models import build_model

    payload = load_checkpoint(path, branch=branch, config=config)
    model = build_model(branch, payload["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise SpgimError(f"checkpoint {path} does not fit the {branch} model: {first[:200]}") from None
    return model


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names and values: identifies weights independently of file layout."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
