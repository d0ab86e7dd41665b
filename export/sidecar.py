"""The JSON sidecar written next to every exported artifact, and the checkpoint facts it records."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

SIDECAR_FORMAT = "spgim-artifact"
SIDECAR_VERSION = 1


def sidecar_path(artifact: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(artifact)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sidecar(artifact: str | os.PathLike[str], description: dict[str, Any]) -> Path:
    """Write the sidecar of ``artifact`` (atomically); returns its path.

    Records the artifact's size and sha256: the runtime checks both before it loads the file.
    """
    target = sidecar_path(artifact)
    payload = {"sidecar": SIDECAR_FORMAT, "sidecar_version": SIDECAR_VERSION, "artifact": Path(artifact).name}
    payload.update(description)
    payload["artifact_bytes"] = Path(artifact).stat().st_size
    payload["artifact_sha256"] = file_sha256(artifact)
    # A fresh temporary file (never a fixed name, which a planted symlink could redirect), renamed over the target.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w") as handle:
            os.fchmod(handle.fileno(), 0o644)  # mkstemp's 0600 would hide it from the folder's other users
            handle.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
