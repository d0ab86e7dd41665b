"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

# Two cores on the build machines: keep torch from oversubscribing them when pytest runs in parallel shells.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny configuration with random weights exported to ONNX fp32, sizes 64..512 dynamic: the streaming
    tests' model, exported once for the session (a module that needs other formats defines its own ``model``)."""
    from model_pairs import export_tiny

    return export_tiny(tmp_path_factory.mktemp("tiny-onnx"))


@pytest.fixture(scope="session")
def matter(model: Path) -> Any:
    """ONNX Runtime on :func:`model` at working size 128: the live tests' matting callable."""
    from spgim.runtime.matting import Matter

    return Matter(model, backend="onnxruntime", work_size=128)


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of a 320x192 clip at 25 frames/s: what the live tests' publishers send in a loop."""
    from media import make_clip

    return make_clip(tmp_path_factory.mktemp("publisher-clip") / "src.mp4", size=(320, 192), frames=100, fps=25).path


@pytest.fixture(scope="session")
def live_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """The live configuration with random weights, exported to every CPU format (pt2 where a compiler is),
    sizes 64..512 dynamic: ``(export folder, spd, spgm)``.

    AOTInductor's compiles are most of the suite's time on two cores (minutes per pair), so the live
    configuration's tests (tests/test_live_config.py) and the pt2 package tests (tests/test_pt2.py) share this one.
    """
    from model_pairs import export_pair, random_pair

    from spgim.aoti_build import aoti_compiler_missing

    folder = tmp_path_factory.mktemp("live-export")
    spd, spgm = random_pair(folder, "live", seed=3, spd_extra={"mask_sigma": 1.0})
    formats = "torchscript,onnx,onnx-trt,openvino" + ("" if aoti_compiler_missing() else ",pt2")
    options = ["--formats", formats, "--precision", "fp32,fp16", "--height", "224", "--width", "384", "--dynamic"]
    export_pair(folder, folder / "m", *options, "--min-size", "64x64", "--max-size", "512x512")
    return folder / "m", spd, spgm
