"""spgim.serving's stateful model ``spgim_live``: the keyframed stream path as Triton sequences, on loopback."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loopback import free_port
from requirements import unavailable

from spgim.errors import SpgimError
from spgim.serving.config import ModelSpec, SequenceBatching, SequenceControl, TensorSpec, render_config
from spgim.serving.options import ServerOptions
from spgim.serving.repository import write_repository
from spgim.serving.sequences import StreamTable
from spgim.serving.server import TritonServer, find_tritonserver
from spgim.streaming.options import EngineOptions, MattingOptions

pytestmark = pytest.mark.slow

WORK_SIZE = 128
INTERVAL = 3  # SPD on frames 0, 3, 6, ... of each sequence
ONNXRUNTIME = EngineOptions(backend="onnxruntime")
KEYFRAMED = MattingOptions(work_size=WORK_SIZE, keyframe_interval=INTERVAL)
ONE_INSTANCE = ServerOptions(instances=1)  # the servers tests start (the command's test runs the default)
LIVE = "spgim_live"
HEIGHT, WIDTH = 192, 320
TOLERANCE = 1e-6  # served and local alphas agree bit for bit here; see the concurrent test


def _parsed(text: str) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _clip(seed: int, count: int = 12) -> np.ndarray:
    """``count`` RGB frames: a noisy background of its own and a bright disc moving across it."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 160, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    y, x = rng.uniform(40, HEIGHT - 40), rng.uniform(40, WIDTH - 40)
    dy, dx = rng.uniform(-6, 6, 2)
    frames = []
    for index in range(count):
        frame = background.copy()
        disc = (rows - (y + dy * index)) ** 2 + (cols - (x + dx * index)) ** 2 < 30**2
        frame[disc] = (240, 230, 220)
        frames.append(frame)
    return np.stack(frames)


# -- the config and the per-sequence table, without a server ------------------------------------------------------


def test_live_config_parses_with_its_sequence_batcher(model: Path, tmp_path: Path) -> None:
    repository = write_repository(model, tmp_path / "models", ONNXRUNTIME, KEYFRAMED)
    config = _parsed((repository / LIVE / "config.pbtxt").read_text())
    assert config.name == LIVE and config.backend == "python" and config.max_batch_size == 8
    assert not config.HasField("dynamic_batching") and config.HasField("sequence_batching")
    batching = config.sequence_batching
    assert batching.max_sequence_idle_microseconds == 60_000_000
    assert batching.WhichOneof("strategy_choice") == "oldest"
    assert batching.oldest.max_candidate_sequences == 8 and batching.oldest.max_queue_delay_microseconds == 2000
    controls = {c.name: c.control[0] for c in batching.control_input}
    kinds = config.sequence_batching.Control.Kind
    assert {name: kinds.Name(c.kind) for name, c in controls.items()} == {
        "START": "CONTROL_SEQUENCE_START",
        "END": "CONTROL_SEQUENCE_END",
        "CORRID": "CONTROL_SEQUENCE_CORRID",
    }
    assert list(controls["START"].int32_false_true) == [0, 1] and list(controls["END"].int32_false_true) == [0, 1]
    from tritonclient.grpc import model_config_pb2

    assert model_config_pb2.DataType.Name(controls["CORRID"].data_type) == "TYPE_UINT64"
    assert [(o.name, list(o.dims)) for o in config.output] == [("alpha", [-1, -1]), ("keyframe", [1])]
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters["keyframe_interval"] == str(INTERVAL) and parameters["work_size"] == str(WORK_SIZE)
    assert (repository / LIVE / "1" / "model.py").is_file()
    # The stateless model's config is unchanged by the live one's options.
    assert "keyframe_interval" not in _parsed((repository / "spgim" / "config.pbtxt").read_text()).parameters


def test_idle_timeout_is_a_parameter_and_every_strategy_parses(model: Path, tmp_path: Path) -> None:
    repository = write_repository(model, tmp_path / "models", ONNXRUNTIME, server=ServerOptions(sequence_idle=2.5))
    config = _parsed((repository / LIVE / "config.pbtxt").read_text())
    assert config.sequence_batching.max_sequence_idle_microseconds == 2_500_000
    direct = ModelSpec(
        name="d",
        backend="python",
        inputs=(TensorSpec("x", "TYPE_FP32", (4,)),),
        outputs=(TensorSpec("y", "TYPE_FP32", (4,)),),
        max_batch_size=4,
        sequence_batching=SequenceBatching(
            controls=(
                SequenceControl("READY", "CONTROL_SEQUENCE_READY"),
                SequenceControl("ID", "CONTROL_SEQUENCE_CORRID", "TYPE_STRING"),
            ),
            max_sequence_idle_microseconds=10,
            strategy="direct",
            max_queue_delay_microseconds=100,
        ),
    )
    parsed = _parsed(render_config(direct))
    assert parsed.sequence_batching.WhichOneof("strategy_choice") == "direct"
    assert parsed.sequence_batching.direct.max_queue_delay_microseconds == 100
    assert [c.name for c in parsed.sequence_batching.control_input] == ["READY", "ID"]


def test_bad_sequence_descriptions_are_one_line(model: Path, tmp_path: Path) -> None:
    with pytest.raises(SpgimError, match="correlation id cannot be"):
        SequenceControl("CORRID", "CONTROL_SEQUENCE_CORRID", "TYPE_FP32")
    with pytest.raises(SpgimError, match="unknown control kind"):
        SequenceControl("X", "CONTROL_SEQUENCE_BEGIN")
    with pytest.raises(SpgimError, match="oldest or direct"):
        SequenceBatching(controls=(), max_sequence_idle_microseconds=1, strategy="newest")
    with pytest.raises(SpgimError, match="exclude each other"):
        ModelSpec(
            name="m",
            backend="python",
            inputs=(TensorSpec("x", "TYPE_FP32", (4,)),),
            outputs=(TensorSpec("y", "TYPE_FP32", (4,)),),
            max_batch_size=2,
            dynamic_batching=True,
            sequence_batching=SequenceBatching(controls=(), max_sequence_idle_microseconds=1),
        )
    with pytest.raises(SpgimError, match="--sequence-idle must be more than 0"):
        write_repository(model, tmp_path / "models", server=ServerOptions(sequence_idle=0))


def test_stream_table_starts_ends_and_expires_sequences() -> None:
    now = [0.0]
    made: list[object] = []

    def open_stream() -> object:
        made.append(object())
        return made[-1]

    table: StreamTable[object] = StreamTable(open_stream, idle_seconds=10, clock=lambda: now[0])
    first = table.start(1)
    assert table.get(1) is first and len(table) == 1
    assert table.start(1) is not first  # a reused id on START is a fresh stream
    table.start(2)
    now[0] = 8.0
    table.get(1)  # seen at 8 s
    now[0] = 12.0
    assert table.expire() == [2] and 1 in table and 2 not in table
    table.end(1)
    with pytest.raises(SpgimError) as refused:
        table.get(1)
    assert "sequence 1 was never started" in str(refused.value) and "\n" not in str(refused.value)
    table.end(3)  # ending an unknown sequence is nothing


# -- against a real server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A tritonserver serving :func:`model` (both models) on loopback ports for this module."""
    try:
        find_tritonserver()
    except SpgimError as error:
        unavailable(str(error))
    folder = tmp_path_factory.mktemp("triton-live")
    repository = write_repository(model, folder / "models", ONNXRUNTIME, KEYFRAMED, ONE_INSTANCE)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with TritonServer(repository, **ports, log_path=folder / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def keyframed(model: Path) -> Any:
    """The local reference: the same export, engine, working size and keyframe interval as the server's."""
    from spgim.runtime.matting import Matter

    return Matter(model, backend="onnxruntime", work_size=WORK_SIZE, keyframe_interval=INTERVAL)


def _local(matter: Any, frames: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """A fresh local stream fed ``frames`` one at a time: alphas and the frames where SPD ran."""
    stream = matter.new_stream()
    alphas = np.stack([matter(frame[None], stream)[0] for frame in frames])
    return alphas, stream.stats.keyframes


def _send(client: Any, frame: np.ndarray, corrid: int, start: bool = False, end: bool = False) -> tuple[Any, int]:
    """One frame of sequence ``corrid``: its alpha ``(H, W)`` and whether SPD ran on it."""
    import tritonclient.grpc as grpcclient

    given = grpcclient.InferInput("frames", [1, *frame.shape], "UINT8")
    given.set_data_from_numpy(frame[None])
    answer = client.infer(LIVE, [given], sequence_id=corrid, sequence_start=start, sequence_end=end, client_timeout=120)
    alpha, keyframe = answer.as_numpy("alpha"), answer.as_numpy("keyframe")
    assert alpha is not None and alpha.shape == (1, *frame.shape[:2]) and alpha.dtype == np.float32
    assert keyframe is not None and keyframe.shape == (1, 1)
    return alpha[0], int(keyframe[0, 0])


def _stream(server: TritonServer, frames: np.ndarray, corrid: int) -> tuple[np.ndarray, list[int]]:
    """A whole sequence through the server, one request per frame, START on the first and END on the last."""
    import tritonclient.grpc as grpcclient

    alphas, keyframes = [], []
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for index, frame in enumerate(frames):
            alpha, keyframe = _send(client, frame, corrid, start=index == 0, end=index == len(frames) - 1)
            alphas.append(alpha)
            if keyframe:
                keyframes.append(index)
    return np.stack(alphas), keyframes


def _counts(server: TritonServer) -> tuple[int, int]:
    """``(nv_inference_count, nv_inference_exec_count)`` of ``spgim_live`` from the metrics page."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as answer:
        text = answer.read().decode()

    def metric(name: str) -> int:
        found = re.search(rf'^{name}{{[^}}]*model="{LIVE}"[^}}]*}} (\S+)$', text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    return metric("nv_inference_count"), metric("nv_inference_exec_count")


def test_concurrent_sequences_each_equal_their_own_local_stream(served: TritonServer, keyframed: Any) -> None:
    """Four sequences at once: each frame equals its own sequence's local keyframed stream, SPD on the same frames.

    The tiny random-weight model's alpha moves little with its guide, so the tolerance is 1e-6 (the server and
    the local run agree bit for bit here): the frames matted with one scheduler shared by the four sequences, as
    a model mixing their states would, differ from the per-sequence runs by about 1e-5, which this tolerance sees.
    """
    clips = {1001 + index: _clip(seed=10 + index) for index in range(4)}
    inferences_before, executions_before = _counts(served)
    answers: dict[int, tuple[np.ndarray, list[int]]] = {}
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(clips))

    def run(corrid: int) -> None:
        try:
            barrier.wait(30)
            answers[corrid] = _stream(served, clips[corrid], corrid)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(corrid,)) for corrid in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not failures, failures
    # Triton refreshes its metrics every couple of seconds: read until every frame is counted (or 15 s).
    frames_sent = sum(len(frames) for frames in clips.values())
    deadline = time.monotonic() + 15
    while True:
        inferences, executions = (
            a - b for a, b in zip(_counts(served), (inferences_before, executions_before), strict=True)
        )
        if inferences >= frames_sent or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    shared = keyframed.new_stream()
    mixed = {corrid: [] for corrid in clips}  # the counterfactual: every sequence's frames through one state
    for index in range(len(clips[1001])):
        for corrid, frames in clips.items():
            mixed[corrid].append(keyframed(frames[index][None], shared)[0])
    mixing = 0.0
    for corrid, frames in clips.items():
        expected, local_keyframes = _local(keyframed, frames)
        alphas, keyframes = answers[corrid]
        np.testing.assert_allclose(alphas, expected, atol=TOLERANCE, rtol=0, err_msg=f"sequence {corrid}")
        assert keyframes == local_keyframes and keyframes[:4] == [0, 3, 6, 9]
        mixing = max(mixing, float(np.abs(np.stack(mixed[corrid]) - expected).max()))
    assert mixing > 5 * TOLERANCE  # the comparison would catch sequences sharing state
    # Every frame counted once; the sequence batcher gave the model several sequences' frames per execute.
    print(f"spgim_live: {inferences} inferences in {executions} executions")
    assert inferences == sum(len(frames) for frames in clips.values())
    assert executions < inferences


def test_a_frame_of_a_never_started_sequence_is_refused_and_serving_goes_on(
    served: TritonServer, keyframed: Any
) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    frames = _clip(seed=3, count=4)
    with (
        grpcclient.InferenceServerClient(served.grpc_url) as client,
        pytest.raises(InferenceServerException) as refused,
    ):
        _send(client, frames[0], corrid=424242)
    text = refused.value.message()
    print(f"refused: {text}")
    assert "must specify the START flag on the first request of the sequence" in text and "\n" not in text
    alphas, keyframes = _stream(served, frames, corrid=424242)
    np.testing.assert_allclose(alphas, _local(keyframed, frames)[0], atol=TOLERANCE, rtol=0)
    assert keyframes[:2] == [0, 3]


def test_end_frees_the_sequence_and_a_new_start_is_a_fresh_stream(served: TritonServer, keyframed: Any) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    first, second = _clip(seed=5, count=5), _clip(seed=6, count=5)
    _stream(served, first, corrid=77)  # START ... END
    with grpcclient.InferenceServerClient(served.grpc_url) as client, pytest.raises(InferenceServerException):
        _send(client, second[0], corrid=77)  # the sequence ended: no frame without a new START
    alphas, keyframes = _stream(served, second, corrid=77)
    expected, local_keyframes = _local(keyframed, second)
    np.testing.assert_allclose(alphas, expected, atol=TOLERANCE, rtol=0)
    assert keyframes == local_keyframes and keyframes[0] == 0


def test_start_on_a_running_sequence_restarts_it(served: TritonServer, keyframed: Any) -> None:
    import tritonclient.grpc as grpcclient

    first, second = _clip(seed=7, count=2), _clip(seed=8, count=4)
    with grpcclient.InferenceServerClient(served.grpc_url) as client:
        for index, frame in enumerate(first):
            _send(client, frame, corrid=88, start=index == 0)  # no END
        sent = [_send(client, frame, corrid=88, start=i == 0, end=i == 3) for i, frame in enumerate(second)]
    expected, local_keyframes = _local(keyframed, second)
    np.testing.assert_allclose(np.stack([alpha for alpha, _ in sent]), expected, atol=TOLERANCE, rtol=0)
    assert [i for i, (_, keyframe) in enumerate(sent) if keyframe] == local_keyframes


@pytest.mark.parametrize(
    ("frame", "datatype", "message"),
    [
        (np.zeros((1, 96, 160, 3), np.float32), "FP32", "data-type"),
        (np.zeros((1, 96, 160), np.uint8), "UINT8", "shape"),
        (np.zeros((1, 16, 16, 3), np.uint8), "UINT8", "frames 16x16: working size 32x32 is outside"),
    ],
    ids=["float32", "rank-3", "16x16"],
)
def test_bad_frames_are_refused_and_the_sequence_goes_on(
    served: TritonServer, frame: np.ndarray, datatype: str, message: str
) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    good = _clip(seed=9, count=2)
    with grpcclient.InferenceServerClient(served.grpc_url) as client:
        _send(client, good[0], corrid=99, start=True)
        given = grpcclient.InferInput("frames", list(frame.shape), datatype)
        given.set_data_from_numpy(frame)
        with pytest.raises(InferenceServerException) as refused:
            client.infer(LIVE, [given], sequence_id=99, client_timeout=120)
        text = refused.value.message()
        assert message in text and "\n" not in text
        alpha, _ = _send(client, good[1], corrid=99, end=True)
    assert alpha.shape == (HEIGHT, WIDTH)


def test_an_idle_sequence_is_dropped(model: Path, tmp_path: Path, keyframed: Any) -> None:
    """Past the idle timeout the server forgets the sequence: its next frame needs START, and is a fresh stream."""
    import time

    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        find_tritonserver()
    except SpgimError as error:
        unavailable(str(error))
    repository = write_repository(
        model, tmp_path / "models", ONNXRUNTIME, KEYFRAMED, ServerOptions(instances=1, sequence_idle=1.0)
    )
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    frames = _clip(seed=12, count=3)
    with (
        TritonServer(repository, **ports, log_path=tmp_path / "tritonserver.log") as server,
        grpcclient.InferenceServerClient(server.grpc_url) as client,
    ):
        _send(client, frames[0], corrid=5, start=True)
        _, keyframe = _send(client, frames[1], corrid=5)
        assert keyframe == 0  # within the timeout the sequence goes on
        time.sleep(3.0)
        with pytest.raises(InferenceServerException) as refused:
            _send(client, frames[2], corrid=5)
        text = refused.value.message()
        assert "must specify the START flag" in text and "\n" not in text
        alpha, keyframe = _send(client, frames[2], corrid=5, start=True, end=True)
    assert keyframe == 1
    np.testing.assert_allclose(alpha, _local(keyframed, frames[2:])[0][0], atol=TOLERANCE, rtol=0)


def test_a_recurrent_model_keeps_a_state_per_sequence(tmp_path: Path) -> None:
    """A recurrent live pair served: two sequences sent frame about frame each equal their own local stream (each
    sequence carries its own recurrent state), and not one stream of both (where the states would mix)."""
    from model_pairs import export_pair, random_pair

    from spgim.runtime.matting import Matter
    from spgim.train.config import LIVE_RECURRENT

    try:
        find_tritonserver()
    except SpgimError as error:
        unavailable(str(error))
    random_pair(tmp_path / "pair", "live", seed=6, recurrent=LIVE_RECURRENT)
    sizes = ("--height", "192", "--width", "320", "--dynamic", "--min-size", "64x64", "--max-size", "512x512")
    model = export_pair(tmp_path / "pair", tmp_path / "model", "--formats", "onnx", "--precision", "fp32", *sizes)
    repository = write_repository(model, tmp_path / "models", ONNXRUNTIME, KEYFRAMED, ONE_INSTANCE)
    clips = {7001: _clip(seed=20, count=8), 7002: _clip(seed=21, count=8)}
    answers: dict[int, list[np.ndarray]] = {corrid: [] for corrid in clips}
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with TritonServer(repository, **ports, log_path=tmp_path / "tritonserver.log") as server:
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            for index in range(8):
                for corrid, frames in clips.items():
                    alpha, _ = _send(client, frames[index], corrid, start=index == 0, end=index == 7)
                    answers[corrid].append(alpha)
    local = Matter(model, backend="onnxruntime", work_size=WORK_SIZE, keyframe_interval=INTERVAL)
    assert getattr(local.backend, "state_tensors", ())  # the served pair is recurrent
    shared = local.new_stream()
    mixed: dict[int, list[np.ndarray]] = {corrid: [] for corrid in clips}
    for index in range(8):
        for corrid, frames in clips.items():
            mixed[corrid].append(local(frames[index][None], shared)[0])
    mixing = 0.0
    for corrid, frames in clips.items():
        expected, _ = _local(local, frames)
        np.testing.assert_allclose(np.stack(answers[corrid]), expected, atol=TOLERANCE, rtol=0, err_msg=f"{corrid}")
        mixing = max(mixing, float(np.abs(np.stack(mixed[corrid]) - expected).max()))
    assert mixing > 5 * TOLERANCE, mixing
