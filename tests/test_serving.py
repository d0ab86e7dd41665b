"""spgim.serving: the Triton model repository, and the model served by a real tritonserver on loopback."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback import free_port
from requirements import unavailable

from spgim.errors import SpgimError
from spgim.serving.config import ModelSpec, TensorSpec, render_config
from spgim.serving.options import ServerOptions
from spgim.serving.repository import write_repository
from spgim.serving.server import TritonServer, find_tritonserver
from spgim.streaming.options import EngineOptions, MattingOptions

pytestmark = pytest.mark.slow

WORK_SIZE = 128  # as conftest's ``matter``
ONNXRUNTIME = EngineOptions(backend="onnxruntime")
ONE = ServerOptions(instances=1)  # the servers tests start (the command's test runs the default)


def _parsed(text: str) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _rgb(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_generated_config_parses_as_a_model_config(model: Path, tmp_path: Path) -> None:
    repository = write_repository(
        model, tmp_path / "models", ONNXRUNTIME, MattingOptions(work_size=WORK_SIZE), ServerOptions(instances=2)
    )
    config = _parsed((repository / "spgim" / "config.pbtxt").read_text())
    assert config.name == "spgim" and config.backend == "python" and config.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in config.input] == [("frames", [-1, -1, 3])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("alpha", [-1, -1])]
    assert config.HasField("dynamic_batching")
    assert config.instance_group[0].count == 2
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters == {
        "model_dir": str(model.resolve()),
        "backend": "onnxruntime",
        "precision": "fp32",
        "upsampling": "auto",
        "work_size": str(WORK_SIZE),
    }
    assert (repository / "spgim" / "1" / "model.py").is_file()


def test_default_instances_are_sized_to_the_machine(model: Path, tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    expected = min(cpus, 4)
    for name in ("spgim", "spgim_live"):
        config = _parsed((write_repository(model, tmp_path / "auto") / name / "config.pbtxt").read_text())
        assert config.instance_group[0].count == expected
        assert config.parameters["threads"].string_value == str(max(1, cpus // expected))
    given = write_repository(model, tmp_path / "given", EngineOptions(threads=3), server=ServerOptions(instances=1))
    config = _parsed((given / "spgim" / "config.pbtxt").read_text())
    assert config.instance_group[0].count == 1 and config.parameters["threads"].string_value == "3"
    with pytest.raises(SpgimError, match="--instances must be 0"):
        ServerOptions(instances=-1)


def test_rendered_strings_are_escaped() -> None:
    odd = 'a "quoted" \\ path\nwith ünïcode'
    spec = ModelSpec(
        name="m",
        backend="python",
        inputs=(TensorSpec("x", "TYPE_FP32", (4,)),),
        outputs=(TensorSpec("y", "TYPE_FP32", (4,)), TensorSpec("z", "TYPE_INT64", (-1, 2))),
        parameters={"path": odd},
    )
    config = _parsed(render_config(spec))
    assert config.parameters["path"].string_value == odd
    assert [o.name for o in config.output] == ["y", "z"] and not config.HasField("dynamic_batching")


def test_bad_descriptions_and_folders_are_one_line(tmp_path: Path, model: Path) -> None:
    with pytest.raises(SpgimError, match="data type"):
        TensorSpec("x", "FLOAT", (1,))
    with pytest.raises(SpgimError, match="does not exist"):
        write_repository(tmp_path / "nowhere", tmp_path / "models")
    with pytest.raises(SpgimError, match="unknown backend"):
        write_repository(model, tmp_path / "models", EngineOptions(backend="nope"))


def _tritonserver_or_skip() -> None:
    try:
        find_tritonserver()
    except SpgimError as error:
        unavailable(str(error))


@pytest.fixture(scope="module")
def served(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A tritonserver serving :func:`model` on loopback ports for this module."""
    _tritonserver_or_skip()
    folder = tmp_path_factory.mktemp("triton")
    repository = write_repository(model, folder / "models", ONNXRUNTIME, MattingOptions(work_size=WORK_SIZE), ONE)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(repository, **ports, log_path=folder / "tritonserver.log")
    with server:
        yield server


@pytest.fixture(scope="module")
def stateless_matter(model: Path) -> Any:
    from spgim.runtime.matting import Matter

    return Matter(model, backend="onnxruntime", work_size=WORK_SIZE, keyframe_interval=0, smoothing=0.0)


def _infer(server: TritonServer, frames: np.ndarray, datatype: str = "UINT8") -> np.ndarray:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        given = grpcclient.InferInput("frames", list(frames.shape), datatype)
        given.set_data_from_numpy(frames)
        answer = client.infer("spgim", [given], client_timeout=120)
        alpha = answer.as_numpy("alpha")
    assert alpha is not None
    return alpha


def test_served_alpha_equals_local_matter_for_a_batch(served: TritonServer, stateless_matter: Any) -> None:
    frames = _rgb(2, 192, 320)
    alpha = _infer(served, frames)
    assert alpha.shape == (2, 192, 320) and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha, stateless_matter(frames), atol=1e-5, rtol=0)


def test_served_alpha_for_frames_of_two_sizes(served: TritonServer, stateless_matter: Any) -> None:
    for height, width in ((320, 192), (96, 160)):
        frames = _rgb(1, height, width, seed=height)
        alpha = _infer(served, frames)
        assert alpha.shape == (1, height, width)
        np.testing.assert_allclose(alpha, stateless_matter(frames), atol=1e-5, rtol=0)


def test_concurrent_requests_of_different_sizes(served: TritonServer, stateless_matter: Any) -> None:
    """Requests the dynamic batcher may gather into one execute, each answered at its own size."""
    from concurrent.futures import ThreadPoolExecutor

    batches = [_rgb(1, 192, 320, seed=1), _rgb(2, 96, 160, seed=2), _rgb(1, 192, 320, seed=3)]
    with ThreadPoolExecutor(len(batches)) as pool:
        answers = list(pool.map(lambda frames: _infer(served, frames), batches))
    for frames, alpha in zip(batches, answers, strict=True):
        np.testing.assert_allclose(alpha, stateless_matter(frames), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("frames", "datatype", "message"),
    [
        (np.zeros((1, 96, 160, 3), np.float32), "FP32", "data-type"),
        (np.zeros((1, 96, 160), np.uint8), "UINT8", "shape"),
        (np.zeros((1, 16, 16, 3), np.uint8), "UINT8", "frames 16x16: working size 32x32 is outside"),
    ],
    ids=["float32", "rank-3", "16x16"],
)
def test_bad_requests_are_refused_and_the_server_keeps_serving(
    served: TritonServer, frames: np.ndarray, datatype: str, message: str
) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as refused:
        _infer(served, frames, datatype)
    text = refused.value.message()
    assert message in text and "\n" not in text
    assert _infer(served, _rgb(1, 96, 160)).shape == (1, 96, 160)


def test_stop_leaves_no_server_process(model: Path, tmp_path: Path) -> None:
    _tritonserver_or_skip()
    repository = write_repository(model, tmp_path / "models", ONNXRUNTIME, MattingOptions(work_size=WORK_SIZE), ONE)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(repository, **ports, log_path=tmp_path / "tritonserver.log")
    server.start()
    pid = server.pid
    assert pid is not None and server.running
    server.stop()
    assert not server.running and server.pid is None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # neither the server nor a backend stub is left in its process group


def test_a_server_that_cannot_start_is_one_line_with_its_log(tmp_path: Path) -> None:
    _tritonserver_or_skip()
    (tmp_path / "models" / "broken").mkdir(parents=True)
    (tmp_path / "models" / "broken" / "config.pbtxt").write_text('name: "broken"\nbackend: "nonexistent"\n')
    server = TritonServer(
        tmp_path / "models",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        ready_timeout=60,
        log_path=tmp_path / "tritonserver.log",
    )
    started = time.monotonic()
    with pytest.raises(SpgimError) as failed:
        server.start()
    assert f"log: {tmp_path / 'tritonserver.log'}" in str(failed.value) and "\n" not in str(failed.value)
    assert time.monotonic() - started < 60 and not server.running


def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(SpgimError, match="no tritonserver executable"):
        find_tritonserver(tmp_path / "tritonserver")


# Until spgim/cli.py lists it, the command module is added here; afterwards this is a no-op.
_SPGIM = "import sys, spgim.cli as cli; sys.exit(cli.main())"


def test_serve_command_prints_endpoints_serves_and_stops_on_sigterm(model: Path, tmp_path: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    _tritonserver_or_skip()
    ports = [str(free_port()) for _ in range(3)]
    command = [sys.executable, "-c", _SPGIM, "serve", "--model", str(model), "--work-size", str(WORK_SIZE)]
    command += ["--backend", "onnxruntime"]
    command += ["--repository", str(tmp_path / "models"), "--http-port", ports[0], "--grpc-port", ports[1]]
    command += ["--metrics-port", ports[2], "--log", str(tmp_path / "tritonserver.log")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        endpoints = [process.stdout.readline().split() for _ in range(3)]
        assert endpoints == [
            ["http", f"http://127.0.0.1:{ports[0]}"],
            ["grpc", f"127.0.0.1:{ports[1]}"],
            ["metrics", f"http://127.0.0.1:{ports[2]}/metrics"],
        ]
        with urllib.request.urlopen(f"{endpoints[0][1]}/v2/models/spgim/ready", timeout=10) as answer:
            assert answer.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "models" / "spgim" / "config.pbtxt").is_file()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{endpoints[0][1]}/v2/health/live", timeout=2)


def test_serve_command_refuses_a_folder_that_is_no_export(tmp_path: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-c", _SPGIM, "serve", "--model", str(tmp_path / "nowhere")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"spgim serve: error: model folder {tmp_path / 'nowhere'} does not exist"
    ]


def test_missing_wheel_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SpgimError, match=r"pip install --no-deps nvidia-pytriton==0\.7\.0"):
        find_tritonserver()
