"""An exported model folder: its manifest, its sidecars, and the checks made before the first frame.

Reads only files (``spgim-export.json`` and each artifact's ``.json`` sidecar); never imports the
training or export code. Every mismatch is one :class:`~spgim.errors.SpgimError` line naming
what differs. An export folder is code (TorchScript, AOTInductor's compiled library, engines that need
the plugin): :func:`verify_files` checks an artifact's bytes against its sidecar's sha256 right before
a backend opens it (docs/security.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError
from spgim.stream_defaults import StreamDefaults

MANIFEST = "spgim-export.json"
# The third exported graph: guided upsampling of the working-size alpha to the frame (no checkpoint of its own).
UPSAMPLE = "upsample"


# The shape of what the runtime reads from a sidecar (absent keys are allowed, present ones must fit):
# a type, a dict of keys, a one-item list (every element fits it), or SIZE, a [width, height] pair.
SIZE = "size"
_SIDECAR_SHAPE: dict[str, Any] = {
    "branch": str,
    "format": str,
    "precision": str,
    "artifact_bytes": int,
    "artifact_sha256": str,
    "companions": [{"file": str, "bytes": int, "sha256": str}],
    "inputs": [{"name": str}],
    "outputs": [{"name": str}],
    "source": {"spd_checkpoint": {"weights": str}},
    "profile": {"min": SIZE, "opt": SIZE, "max": SIZE},
    "export_size": SIZE,
    "stream": StreamDefaults.record_types(),
    "batch": int,
    "flops_per_frame": float,
    "cpu_flags": [str],
    "package_sizes": dict,
    "plugin": {"library": str},
    "tensorrt_version": str,
    "gpu": str,
}
_MANIFEST_ITEM = {"branch": str, "format": str, "precision": str, "file": str}


def misfit(value: Any, shape: Any, where: str = "") -> str | None:
    """The first place where ``value`` does not have ``shape`` (see ``_SIDECAR_SHAPE``), or None.

    Besides the shapes above, a tuple of shapes is any one of them and ``None`` is JSON's null.
    """
    if isinstance(shape, tuple):
        faults = [misfit(value, one, where) for one in shape]
        return None if None in faults else faults[0]
    if shape is None:
        return None if value is None else f"{where} is not null"
    if shape == SIZE:
        fits = isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)
        return None if fits else f"{where or 'value'} is not a [width, height] pair"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'value'} is not an object"
        for key, inner in shape.items():
            if key in value:
                found = misfit(value[key], inner, f"{where}.{key}" if where else key)
                if found:
                    return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} is not a list"
        return next((f for i, v in enumerate(value) if (f := misfit(v, shape[0], f"{where}[{i}]"))), None)
    if shape is float:
        fits = (_is_int(value) or isinstance(value, float)) and value == value
    elif shape is int:
        fits = _is_int(value)
    else:
        fits = isinstance(value, shape)
    return None if fits else f"{where} is not {'a number' if shape in (int, float) else shape.__name__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Artifact:
    """One exported file and its sidecar."""

    branch: str
    format: str
    precision: str
    path: Path
    sidecar: dict[str, Any]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise SpgimError(f"{path} is missing: not an spgim export folder ({what})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise SpgimError(f"{path} is unreadable or corrupt ({what})") from None
    if not isinstance(data, dict):
        raise SpgimError(f"{path} is not an spgim {what}")
    return data


def load_artifacts(folder: str | Path) -> list[Artifact]:
    """Every artifact listed in ``folder/spgim-export.json``, with its sidecar, size-checked."""
    root = Path(folder)
    if not root.is_dir():
        raise SpgimError(f"model folder {root} does not exist")
    manifest = _read_json(root / MANIFEST, "manifest")
    items = manifest.get("artifacts", [])
    fault = misfit(items, [_MANIFEST_ITEM], "artifacts") or next(
        (f"artifacts[{i}] lacks {key!r}" for i, item in enumerate(items) for key in _MANIFEST_ITEM if key not in item),
        None,
    )
    if fault is None:
        # A manifest names files beside it, never elsewhere (no "../" or absolute paths).
        fault = next(
            (f"{item['file']!r} is not a file name" for item in items if Path(item["file"]).name != item["file"]), None
        )
    if fault:
        raise SpgimError(f"{root / MANIFEST} is not a valid spgim manifest: {fault}")
    artifacts = []
    for item in items:
        path = root / item["file"]
        sidecar = _read_json(path.with_name(path.name + ".json"), "sidecar")
        fault = misfit(sidecar, _SIDECAR_SHAPE)
        if fault is None:
            names = [companion.get("file", "") for companion in sidecar.get("companions", [])]
            fault = next((f"companion {n!r} is not a file name" for n in names if not _bare_name(n)), None)
        library = sidecar.get("plugin", {}).get("library")
        if fault is None and library is not None and not _bare_name(library):
            # The plugin is loaded only from spgim's own build, $SPGIM_TST_PLUGIN or --plugin (spgim.tst_plugin);
            # spgim export records its file name only (older exports recorded the build's path: export again).
            fault = f"plugin.library {library!r} is not a bare file name (never loaded from the export): export again"
        if fault:
            raise SpgimError(f"{path.name}.json is not a valid spgim sidecar: {fault}")
        if "artifact_sha256" not in sidecar or any("sha256" not in c for c in sidecar.get("companions", [])):
            raise SpgimError(
                f"{path.name}.json records no sha256 of its files (exported by an older spgim): export again"
            )
        if not path.is_file():
            raise SpgimError(f"{path} is listed in {MANIFEST} but missing")
        if sidecar.get("artifact_bytes") != path.stat().st_size:
            raise SpgimError(
                f"{path} is {path.stat().st_size} bytes, its sidecar says {sidecar.get('artifact_bytes')}: "
                "truncated or replaced; export again"
            )
        for companion in sidecar.get("companions", []):  # files that travel with it (OpenVINO IR's .bin)
            extra = root / companion["file"]
            if not extra.is_file() or extra.stat().st_size != companion.get("bytes"):
                raise SpgimError(
                    f"{extra} ({path.name}'s {companion['file']}) is missing, truncated or replaced; export again"
                )
        artifacts.append(Artifact(item["branch"], item["format"], item["precision"], path, sidecar))
    if not artifacts:
        raise SpgimError(f"{root / MANIFEST} lists no artifacts")
    return artifacts


def _bare_name(name: str) -> bool:
    """Whether ``name`` is a file name in its folder: no separator, not absolute, not ``.`` or ``..``."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


class ChangedArtifactError(SpgimError):
    """A file of an export folder whose bytes are not those its sidecar's sha256 records."""


# Digests of files hashed in this process, keyed by what a rewrite changes (path, size, mtime, inode): auto's
# ranking opens a backend and the chosen one is opened again, and each file is hashed once.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def verify_files(artifact: Artifact) -> None:
    """Refuse ``artifact`` unless its file and its companions have the sha256 its sidecar records.

    Called right before a backend or the upsampler opens the files (loading TorchScript, an AOTInductor
    package or an engine runs code), so only the files actually loaded are read and hashed.

    Raises:
        ChangedArtifactError: one line naming the file that changed (or has no recorded sha256): export again.
    """
    files = [(artifact.path, artifact.sidecar.get("artifact_sha256"))]
    for companion in artifact.sidecar.get("companions", []):
        files.append((artifact.path.with_name(companion["file"]), companion.get("sha256")))
    for path, expected in files:
        if not isinstance(expected, str):
            raise ChangedArtifactError(f"{artifact.path.name}'s sidecar records no sha256 of {path.name}: export again")
        if _sha256(path) != expected:
            raise ChangedArtifactError(
                f"{path} does not match the sha256 in its sidecar (changed since it was exported): export again"
            )


def _sha256(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            # fstat of the open handle: the key describes the bytes hashed, not a file swapped in since a stat.
            status = os.fstat(handle.fileno())
            key = (str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino)
            if key not in _DIGESTS:
                _DIGESTS[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as error:
        raise ChangedArtifactError(f"{path} cannot be read to check its sha256 ({error.strerror})") from None
    return _DIGESTS[key]


def select_pair(artifacts: list[Artifact], fmt: str, precision: str) -> tuple[Artifact, Artifact]:
    """The SPD and SPGM artifacts of one format and precision (SPD's TensorRT flavour is its portable graph, but in
    int8).

    Other branches in the folder (the ``upsample`` graph: :func:`select_upsampler`) are not part of the pair.
    """

    def find(branch: str, wanted: str) -> Artifact:
        for artifact in artifacts:
            if artifact.branch == branch and artifact.format == wanted and artifact.precision == precision:
                return artifact
        available = sorted({f"{a.format}/{a.precision}" for a in artifacts if a.branch == branch})
        raise SpgimError(f"no {branch} artifact in format {wanted} {precision}; this folder has {', '.join(available)}")

    # An int8 pair is quantized together: onnx-trt's int8 SPD is its own QDQ graph.
    spd = find("spd", "onnx" if fmt == "onnx-trt" and precision != "int8" else fmt)
    spgm = find("spgm", fmt)
    check_pair(spd, spgm)
    return spd, spgm


def select_upsampler(artifacts: list[Artifact], fmt: str) -> Artifact | None:
    """The fp32 ``upsample`` graph (guided upsampling to the frame's size) of a format, or None.

    There is one upsampler per format, fp32, whatever precision SPD and SPGM run in; ``onnx-trt`` reads the
    portable ``onnx`` one (it has no attention). None for an export folder made before the upsample graph
    existed, or one without that format.
    """
    wanted = "onnx" if fmt == "onnx-trt" else fmt
    for artifact in artifacts:
        if artifact.branch == UPSAMPLE and artifact.format == wanted and artifact.precision == "fp32":
            return artifact
    return None


def check_pair(spd: Artifact, spgm: Artifact) -> None:
    """Refuse an SPGM artifact made from another SPD than the SPD artifact's."""
    spd_weights = spd.sidecar.get("source", {}).get("spd_checkpoint", {}).get("weights")
    expected = spgm.sidecar.get("source", {}).get("spd_checkpoint", {}).get("weights")
    if spd_weights is None or expected is None or spd_weights != expected:
        raise SpgimError(f"{spgm.path.name} was exported with another SPD than {spd.path.name}; use one export's pair")


def check_size(artifact: Artifact, height: int, width: int) -> None:
    """Refuse an input size outside the artifact's profile (sizes are multiples of 32)."""
    if height % 32 or width % 32:
        raise SpgimError(f"working size {width}x{height} must be multiples of 32")
    profile = artifact.sidecar.get("profile", {})
    smallest, largest = profile.get("min"), profile.get("max")
    if smallest and largest and not (smallest[0] <= width <= largest[0] and smallest[1] <= height <= largest[1]):
        raise SpgimError(
            f"working size {width}x{height} is outside {artifact.path.name}'s profile "
            f"{smallest[0]}x{smallest[1]}..{largest[0]}x{largest[1]}; export with --dynamic --min-size/--max-size"
        )


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def check_engine_tensorrt(artifact: Artifact, installed: str | None) -> None:
    """Refuse an engine where TensorRT is missing, or of another major.minor than the one it was built with.

    Args:
        artifact: an engine; its sidecar's ``tensorrt_version`` is ``tensorrt.__version__`` at build time.
        installed: this machine's ``tensorrt.__version__``, or None where TensorRT is not installed.
    """
    built = str(artifact.sidecar.get("tensorrt_version", "unknown"))
    if installed is None:
        raise SpgimError(
            f"{artifact.path.name} is a TensorRT {built} engine but TensorRT is not installed here: on a machine "
            "with an NVIDIA GPU, pip install tensorrt; or run the ONNX or TorchScript artifacts (--backend auto)"
        )
    if _major_minor(built) != _major_minor(installed):
        raise SpgimError(
            f"{artifact.path.name} was built with TensorRT {built}, this machine has TensorRT {installed}: "
            "engines run only in the TensorRT they were built with; rebuild it here (spgim export --formats engine)"
        )


def check_engine_gpu(artifact: Artifact, gpu: tuple[str, str] | None) -> str | None:
    """Refuse an engine on a machine without a GPU or on a GPU of another compute capability.

    Args:
        artifact: an engine; its sidecar records ``gpu`` (device name) and ``compute_capability`` (``"8.9"``).
        gpu: this machine's (name, compute capability), or None without a CUDA GPU.

    Returns:
        A one-line warning when only the GPU's name differs (same architecture: the engine loads, but its
        kernels were timed on another model), else None.
    """
    built_name = artifact.sidecar.get("gpu", "unknown GPU")
    built_capability = str(artifact.sidecar.get("compute_capability", "unknown"))
    if gpu is None:
        raise SpgimError(f"{artifact.path.name} is a TensorRT engine but no CUDA GPU is visible here")
    name, capability = gpu
    if capability != built_capability:
        raise SpgimError(
            f"{artifact.path.name} was built on {built_name} (compute capability {built_capability}), this GPU is "
            f"{name} (compute capability {capability}): rebuild the engine on this GPU (spgim export --formats engine)"
        )
    if name != built_name:
        return f"{artifact.path.name} was built on {built_name}, running on {name}: rebuild here for the best speed"
    return None
