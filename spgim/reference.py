"""The reference checkpoints shipped inside spgim: the ``live`` configuration trained on generated scenes.

``scripts/train_reference.sh`` trains them (about an hour on two CPU cores), ``scripts/ship_reference.py``
stores them here in fp16 with their sha256 digests in ``weights/reference.json``. They were trained on
the project's generated scenes only (coloured shapes over photos and textures, SPEC.md §1 Data): a
starting point for fine-tuning on your own matting data and for the demo, not a model of people.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError

WEIGHTS = Path(__file__).with_name("weights")
MANIFEST = WEIGHTS / "reference.json"


def reference_manifest() -> dict[str, Any]:
    """``weights/reference.json``: per branch the file and its sha256, the command, the evaluation."""
    try:
        manifest: dict[str, Any] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise SpgimError(f"the reference checkpoints' manifest {MANIFEST} is unreadable: {error}") from None
    return manifest


def reference_checkpoint(branch: str) -> Path:
    """The shipped checkpoint of ``branch`` ("spd" or "spgm"), its digest checked against the manifest.

    Raises:
        SpgimError: no reference for the branch, or a file that is missing or not the one shipped.
    """
    entry = reference_manifest().get("branches", {}).get(branch)
    if entry is None:
        raise SpgimError(f"spgim ships no reference {branch} checkpoint")
    path = WEIGHTS / entry["file"]
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise SpgimError(f"the reference {branch} checkpoint {path} cannot be read: {error.strerror}") from None
    if digest != entry["sha256"]:
        raise SpgimError(f"the reference {branch} checkpoint {path} is not the one shipped (sha256 differs)")
    return path
