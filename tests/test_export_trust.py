"""An export folder is code: each file is checked against its sidecar's sha256 right before it is loaded, the plugin
library is never named by the folder, and ``--backend onnxruntime`` opens nothing but ONNX (docs/security.md)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from model_pairs import export_tiny

from spgim.errors import SpgimError
from spgim.runtime.artifacts import ChangedArtifactError, load_artifacts, verify_files
from spgim.runtime.matting import Matter

pytestmark = pytest.mark.slow  # exports every format once

SPGIM = str(Path(sys.executable).with_name("spgim"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("trust"), formats="torchscript,onnx,openvino")


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def _flip(path: Path) -> None:
    """Change one byte in the middle of ``path``, keeping its size (what the size check alone lets through)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def _matte(model: Path, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``spgim matte`` of two PNG frames to an alpha PNG folder, in a process of its own."""
    frames = tmp_path / "frames"
    frames.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(2):
        cv2.imwrite(str(frames / f"{index:05d}.png"), rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    argv = [SPGIM, "matte", "--model", str(model), str(frames), "--alpha", str(tmp_path / "alpha"), *options]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("spgim matte: error: ")
    return line


@pytest.mark.parametrize(
    ("changed", "backend"),
    [("spd.bin", "openvino"), ("spgm.onnx", "onnxruntime"), ("spd.torchscript.pt", "torchscript")],
)
def test_a_file_changed_at_the_same_size_is_refused_in_one_line(
    folder: Path, tmp_path: Path, changed: str, backend: str
) -> None:
    model = _copy(folder, tmp_path / "model")
    _flip(model / changed)
    line = _one_error_line(_matte(model, tmp_path, "--backend", backend))
    assert re.search(rf"{re.escape(changed)} does not match the sha256 in its sidecar .*: export again$", line), line


def test_auto_refuses_a_changed_file_instead_of_skipping_it(folder: Path, tmp_path: Path) -> None:
    """auto opens every backend while ranking: a changed TorchScript file stops it, as it would stop that backend."""
    model = _copy(folder, tmp_path / "model")
    _flip(model / "spgm.torchscript.pt")
    with pytest.raises(ChangedArtifactError, match=r"spgm\.torchscript\.pt does not match the sha256"):
        Matter(model, work_size=128)
    assert not (model / "spgim-ranking.json").exists()  # nothing cached from a refused folder


def test_a_file_rewritten_after_its_check_is_checked_again(folder: Path, tmp_path: Path) -> None:
    model = _copy(folder, tmp_path / "model")
    (artifact,) = [a for a in load_artifacts(model) if a.path.name == "spd.onnx"]
    verify_files(artifact)
    verify_files(artifact)  # the second check is the per-process cache's
    _flip(artifact.path)
    with pytest.raises(ChangedArtifactError, match=r"spd\.onnx does not match"):
        verify_files(artifact)


@pytest.mark.parametrize(
    ("sidecar", "change"),
    [
        ("spd.onnx.json", lambda d: d.pop("artifact_sha256")),
        ("spd.xml.json", lambda d: d["companions"][0].pop("sha256")),
    ],
)
def test_an_export_without_recorded_sha256_is_refused(
    folder: Path, tmp_path: Path, sidecar: str, change: Callable[[dict[str, Any]], object]
) -> None:
    model = _copy(folder, tmp_path / "model")
    data = json.loads((model / sidecar).read_text())
    change(data)
    (model / sidecar).write_text(json.dumps(data))
    message = rf"^{re.escape(sidecar)} records no sha256 of its files \(exported by an older spgim\): export again$"
    with pytest.raises(SpgimError, match=message):
        load_artifacts(model)


@pytest.mark.parametrize("library", ["/opt/elsewhere/libspgim_tst_plugin.so", "build/native/libx.so", "..", ""])
def test_a_sidecar_naming_a_plugin_path_is_refused(folder: Path, tmp_path: Path, library: str) -> None:
    model = _copy(folder, tmp_path / "model")
    data = json.loads((model / "spgm.onnx.json").read_text())
    data["plugin"] = {"name": "TSTAttention", "library": library}
    (model / "spgm.onnx.json").write_text(json.dumps(data))
    message = rf"^spgm\.onnx\.json is not a valid spgim sidecar: plugin\.library {re.escape(repr(library))} is not a"
    with pytest.raises(SpgimError, match=message) as refused:
        load_artifacts(model)
    assert "\n" not in str(refused.value)


def test_the_exporter_records_sha256_of_every_file(folder: Path) -> None:
    from spgim.export.sidecar import file_sha256

    for artifact in load_artifacts(folder):
        assert artifact.sidecar["artifact_sha256"] == file_sha256(artifact.path)
        for companion in artifact.sidecar.get("companions", []):
            assert companion["sha256"] == file_sha256(folder / companion["file"])


def test_onnxruntime_opens_only_onnx(
    live_export: tuple[Path, torch.nn.Module, torch.nn.Module], tmp_path: Path
) -> None:
    """With every non-ONNX file damaged (TorchScript, AOTInductor packages, OpenVINO IR), ``--backend onnxruntime``
    still runs, ``--precision auto``'s ranking and the upsample graph included: those files are not even hashed."""
    model = _copy(live_export[0], tmp_path / "model")
    damaged = [p for p in model.iterdir() if p.suffix in (".pt", ".pt2", ".xml", ".bin")]
    assert {p.suffix for p in damaged} >= {".pt", ".xml", ".bin"}
    for path in damaged:
        _flip(path)
    options = ("--backend", "onnxruntime", "--precision", "auto", "--upsample", "guided", "--work-size", "128")
    result = _matte(model, tmp_path, *options)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "alpha").iterdir())) == 2
    # The same folder under auto, which would load them, is refused.
    line = _one_error_line(_matte(model, tmp_path, "--work-size", "128"))
    assert "does not match the sha256 in its sidecar" in line
