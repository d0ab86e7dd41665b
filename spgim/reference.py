"""The reference checkpoints shipped inside spgim: the ``live`` and ``tiny`` configurations trained on
generated scenes.

``scripts/train_reference.sh`` trains a pair (about an hour on two CPU cores), ``scripts/ship_reference.py``
stores it here in fp16 with its sha256 digests in ``weights/<config>.json``. They were trained on
the project's generated scenes only (coloured shapes over photos and textures, docs/design.md): a
starting point for fine-tuning on your own matting data and for the demo, not a model of people.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError

WEIGHTS = Path(__file__).with_name("weights")
CONFIGS = ("live", "tiny")


def manifest_path(config: str) -> Path:
    """Where the manifest of ``config``'s reference pair lives: ``weights/<config>.json``."""
    return WEIGHTS / f"{config}.json"


def reference_manifest(config: str = "live") -> dict[str, Any]:
    """``weights/<config>.json``: per branch the file and its sha256, the command, the evaluation.

    Raises:
        SpgimError: no reference for ``config``, or a manifest that cannot be read.
    """
    if config not in CONFIGS:
        raise SpgimError(f"spgim ships no reference checkpoints of the {config!r} configuration ({', '.join(CONFIGS)})")
    path = manifest_path(config)
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SpgimError(f"the reference checkpoints' manifest {path} is unreadable: {error}") from None
    return manifest


def reference_checkpoint(branch: str, config: str = "live") -> Path:
    """The shipped checkpoint of ``branch`` ("spd" or "spgm") of ``config``, its digest checked.

    Raises:
        SpgimError: no reference for the branch, or a file that is missing or not the one shipped.
    """
    entry = reference_manifest(config).get("branches", {}).get(branch)
    if entry is None:
        raise SpgimError(f"spgim ships no reference {branch} checkpoint of the {config} configuration")
    path = WEIGHTS / entry["file"]
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise SpgimError(f"the reference {branch} checkpoint {path} cannot be read: {error.strerror}") from None
    if digest != entry["sha256"]:
        raise SpgimError(f"the reference {branch} checkpoint {path} is not the one shipped (sha256 differs)")
    return path
