"""``spgim export --triton``: a model repository inside the export folder, moved with it and run by ``spgim serve``."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from loopback import free_port
from model_pairs import export_pair, random_pair
from requirements import unavailable

from spgim.errors import SpgimError
from spgim.serving.repository import repository_models
from spgim.serving.server import find_tritonserver

pytestmark = pytest.mark.slow

SPGIM = [sys.executable, "-m", "spgim"]
PYTHON_MODELS = {"spgim": "python", "spgim_live": "python"}
NATIVE_MODELS = {
    "spgim_spd": "onnxruntime_onnx",
    "spgim_spgm": "onnxruntime_onnx",
    "spgim_upsample": "onnxruntime_onnx",
    "spgim_native": "ensemble",
}


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pair exported with ``--triton``, then the export folder moved elsewhere (the repository with it)."""
    folder = tmp_path_factory.mktemp("export-triton")
    random_pair(folder, seed=3)
    options = ("--formats", "onnx", "--precision", "fp32", "--size", "128x128", "--dynamic", "--triton")
    export_pair(folder, folder / "first" / "model", *options)
    shutil.move(folder / "first" / "model", folder / "moved")
    return folder / "moved"


def test_the_repository_holds_both_flavours_and_names_the_export_relatively(moved: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    repository = moved / "triton"
    assert repository_models(repository) == PYTHON_MODELS | NATIVE_MODELS
    assert repository_models(moved) is None  # the export folder itself is no repository
    for name in PYTHON_MODELS:
        config = text_format.Parse((repository / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.parameters["model_dir"].string_value == "../.."
        assert config.parameters["precision"].string_value == "fp32"  # the one precision exported
        assert config.instance_group[0].count == 1  # the exporting machine does not size the serving one
        assert (repository / name / "1" / "model.py").is_file()
    for name in ("spgim_spd", "spgim_spgm", "spgim_upsample"):
        assert (repository / name / "1" / "model.onnx").stat().st_size > 0
    assert not (repository / "spgim_spd_trt").exists()  # no TensorRT flavour was exported


def test_serve_refuses_choices_that_belong_to_writing_the_repository(moved: Path) -> None:
    repository = moved / "triton"
    for extra, message in (
        (["--backend", "onnxruntime"], f"--backend: chosen when {repository} was written"),
        (["--work-size", "96", "--instances", "2"], f"--work-size, --instances: chosen when {repository} was written"),
        (["--models", "spgim,nope"], f"--models: nope not in {repository}"),
    ):
        done = subprocess.run(
            [*SPGIM, "serve", "--model", str(repository), *extra], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"spgim serve: error: {message}"), lines
    done = subprocess.run(
        [*SPGIM, "serve", "--model", str(moved), "--models", "spgim"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "--models picks models of a model repository" in done.stderr


def test_serve_runs_the_moved_repository(moved: Path, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    from spgim.runtime.matting import Matter

    try:
        find_tritonserver()
    except SpgimError as error:
        unavailable(str(error))
    ports = [str(free_port()) for _ in range(3)]
    command = [*SPGIM, "serve", "--model", str(moved / "triton"), "--http-port", ports[0], "--grpc-port", ports[1]]
    command += ["--metrics-port", ports[2], "--log", str(tmp_path / "tritonserver.log")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        endpoints = dict(process.stdout.readline().split() for _ in range(3))
        for name, kind in PYTHON_MODELS.items():
            with urllib.request.urlopen(f"{endpoints['http']}/v2/models/{name}/ready", timeout=10) as answer:
                assert answer.status == 200, (name, kind)
        frames = np.random.default_rng(5).integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
        with grpcclient.InferenceServerClient(endpoints["grpc"]) as client:
            given = grpcclient.InferInput("frames", list(frames.shape), "UINT8")
            given.set_data_from_numpy(frames)
            alpha = client.infer("spgim", [given], client_timeout=120).as_numpy("alpha")
            assert not client.is_model_ready("spgim_native")  # the wheel's server has only the Python backend
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 130
        stderr = process.stderr.read() if process.stderr is not None else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "not loading spgim_native (ensemble), spgim_spd (onnxruntime_onnx)" in stderr
    assert alpha is not None and alpha.shape == (2, 96, 160)
    # Backend auto: the server measured which engine runs the ONNX graphs; the alpha is that engine's, exactly.
    differences = {}
    for backend in ("onnxruntime", "openvino"):
        try:
            local = Matter(moved, backend=backend, keyframe_interval=0, smoothing=0.0)
        except SpgimError:
            continue
        differences[backend] = float(np.abs(local(frames) - alpha).max())
    assert min(differences.values()) <= 1e-5, differences
