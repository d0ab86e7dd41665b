"""A recurrent SPGM through every export format and the runtime: its state in and out of each graph, carried
from frame to frame by the keyframe scheduler, reset where a stream breaks, never shared between streams."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from model_pairs import export_pair, random_pair
from requirements import unavailable

from spgim.aoti_build import aoti_compiler_missing
from spgim.errors import SpgimError
from spgim.export.io_spec import recurrent_state, spgm_spec
from spgim.runtime.artifacts import load_artifacts, select_pair
from spgim.runtime.keyframes import KeyframePolicy, KeyframeScheduler
from spgim.runtime.matting import Matter
from spgim.runtime.registry import BACKENDS, BackendOptions, open_backend, runnable
from spgim.streaming.frames import VideoFrame, VideoInfo
from spgim.streaming.pipeline import Pipeline, Plan, timestamp_gap
from spgim.streaming.sources import Source
from spgim.train.checkpoint import load_checkpoint, save_checkpoint
from spgim.train.config import LIVE_RECURRENT, config_differences, get_config
from spgim.train.models import build_model, guide_channels

EXPORT_OPTIONS = (
    "--precision",
    "fp32",
    "--size",
    "128x128",
    "--dynamic",
    "--min-size",
    "64x64",
    "--max-size",
    "256x256",
)
WORK_HW = (96, 128)  # the working size of the streams below (inside the export's 64..256 profile)
STREAM_FRAMES = 30
TOLERANCE = 1e-4  # as the live export's parity with eager (tests/test_live_config.py)
STATES = ("state_os16", "state_os8", "state_os4")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """The live configuration's recurrent SPGM (random residuals) with its SPD, saved as checkpoints."""
    folder = tmp_path_factory.mktemp("recurrent")
    spd, spgm = random_pair(folder, "live", seed=4, recurrent=LIVE_RECURRENT)
    return folder, spd, spgm


@pytest.fixture(scope="module")
def folder(pair: tuple[Path, torch.nn.Module, torch.nn.Module]) -> Path:
    """Every CPU format but pt2 (compiled by its own slow test)."""
    return export_pair(pair[0], pair[0] / "m", "--formats", "torchscript,onnx,onnx-trt,openvino", *EXPORT_OPTIONS)


def _scene(seed: int, frames: int, height: int = WORK_HW[0], width: int = WORK_HW[1]) -> np.ndarray:
    """uint8 frames: a still background of colour blotches with a bright disc moving three pixels a frame."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    clip = []
    for t in range(frames):
        frame = base.copy()
        cv2.circle(frame, (20 + 3 * t, height // 2), 14, (250, 240, 230), -1)
        clip.append(frame)
    return np.stack(clip)


def _images(frames: np.ndarray) -> np.ndarray:
    """Frames at the working size as the scheduler takes them: float32 ``(N, 3, h, w)`` in [0, 1]."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


@torch.no_grad()
def _eager(
    spd: torch.nn.Module, spgm: torch.nn.Module, images: np.ndarray, *, carry: bool = True
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Eager alphas of a stream, frame by frame, the state carried (or every frame from zeros), and the last state."""
    alphas, state = [], ()
    for image in images:
        x = torch.from_numpy(image[None])
        alpha, *new_state = spgm(x, *spd(x), *state)
        state = tuple(new_state) if carry else ()
        alphas.append(alpha.numpy())
    return np.concatenate(alphas), tuple(s.numpy() for s in new_state)


@pytest.fixture(scope="module")
def stream(pair: tuple[Path, torch.nn.Module, torch.nn.Module]) -> dict[str, Any]:
    """A 30-frame stream and eager's alphas of it: the state carried, and every frame from zeros."""
    _, spd, spgm = pair
    images = _images(_scene(0, STREAM_FRAMES))
    expected, state = _eager(spd, spgm, images)
    stateless, _ = _eager(spd, spgm, images, carry=False)
    # What the state changes in the alpha: an export that dropped it would be off by this much.
    effect = float(np.abs(stateless - expected).max())
    assert effect > 1e-5
    return {"images": images, "alpha": expected, "state": state, "effect": effect}


def _backend(folder: Path, name: str) -> Any:
    artifacts = load_artifacts(folder)
    reason = runnable(BACKENDS[name], artifacts, "fp32")
    if reason is not None:
        unavailable(reason)
    return open_backend(BACKENDS[name], artifacts, BackendOptions(precision="fp32"))[0]


def _bound_backend(folder: Path) -> Any:
    """ONNX Runtime with I/O binding (the GPU providers' code) on the CPU provider."""
    from spgim.runtime.onnxruntime_gpu import OnnxRuntimeGpuBackend

    return OnnxRuntimeGpuBackend(*select_pair(load_artifacts(folder), "onnx", "fp32"), provider="cpu")


def _input(backend: Any, images: np.ndarray) -> Any:
    """Images as the backend's run_spd/run_spgm take them: numpy, or torch tensors for the bound backend."""
    return torch.from_numpy(images) if isinstance(backend, _bound_type()) else images


def _bound_type() -> type:
    from spgim.runtime.onnxruntime_gpu import OnnxRuntimeGpuBackend

    return OnnxRuntimeGpuBackend


def _stream(backend: Any, images: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """A backend's alphas of a stream through run_spd/run_spgm, the state carried by hand, and its last state."""
    alphas, state = [], ()
    for index in range(len(images)):
        x = _input(backend, images[index : index + 1])
        alpha, state = backend.run_spgm(x, backend.run_spd(x), state)
        alphas.append(np.asarray(alpha, dtype=np.float32))
    return np.concatenate(alphas), tuple(np.asarray(s, dtype=np.float32) for s in state)


def _check_stream(backend: Any, stream: dict[str, Any]) -> None:
    """The backend's stream equals eager's, within a tenth of what the state changes, and its last state too."""
    alphas, state = _stream(backend, stream["images"])
    error = np.abs(alphas - stream["alpha"])
    state_error = max(float(np.abs(a - b).max()) for a, b in zip(state, stream["state"], strict=True))
    print(
        f"{backend.name}: alpha max {error.max():.2e}, state max {state_error:.2e}, state effect {stream['effect']:.2e}"
    )
    assert error.max() < min(TOLERANCE, stream["effect"] / 10) and state_error < TOLERANCE


def test_the_spec_adds_the_state_to_spgm_only_when_recurrent(pair: tuple, folder: Path) -> None:
    spgm = pair[2]
    channels = guide_channels(get_config("live"))
    stateless = spgm_spec(channels)
    assert (stateless.input_names, stateless.output_names) == (["image", "mask", "r2", "r3", "r4"], ["alpha"])
    assert recurrent_state(build_model("spgm", get_config("live"))) == ()
    state = recurrent_state(spgm)
    assert [(t.name, t.channels, t.stride) for t in state] == [(STATES[0], 8, 16), (STATES[1], 8, 8), (STATES[2], 4, 4)]
    spec = spgm_spec(channels, state)
    assert spec.input_names == ["image", "mask", "r2", "r3", "r4", *STATES]
    assert spec.output_names == ["alpha", *(f"next_{name}" for name in STATES)]
    assert spec.dynamic_axes()["next_state_os8"] == {0: "batch", 2: "height_os8", 3: "width_os8"}
    # TensorRT's profile follows from the spec: each state at its stride of min, opt and max.
    profile = spec.profile((64, 64), (128, 128), (256, 256), (1, 1, 1))
    assert profile["state_os16"] == [[1, 8, 4, 4], [1, 8, 8, 8], [1, 8, 16, 16]]
    # Every sidecar records the state as it records the other tensors.
    for artifact in load_artifacts(folder):
        names = ([t["name"] for t in artifact.sidecar["inputs"]], [t["name"] for t in artifact.sidecar["outputs"]])
        if artifact.branch == "spgm":
            assert names == (spec.input_names, spec.output_names), artifact.path.name
            inputs = {t["name"]: t["shape"] for t in artifact.sidecar["inputs"]}
            assert inputs["state_os4"] == ["batch", 4, "height/4", "width/4"]
        else:
            assert not any(name.startswith(("state_", "next_")) for name in names[0] + names[1]), artifact.path.name


@pytest.mark.parametrize("name", ["onnxruntime", "onnxruntime-twin", "openvino", "torchscript", "onnxruntime-bound"])
def test_every_cpu_export_equals_eager_over_a_stream(folder: Path, stream: dict[str, Any], name: str) -> None:
    backend = _bound_backend(folder) if name == "onnxruntime-bound" else _backend(folder, name)
    assert [t.name for t in backend.state_tensors] == list(STATES)
    _check_stream(backend, stream)
    # Without a state argument a run starts from zeros and gives the alpha alone, as infer does.
    first = _input(backend, stream["images"][:1])
    alpha = backend.run_spgm(first, backend.run_spd(first))
    np.testing.assert_allclose(np.asarray(alpha), stream["alpha"][:1], atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(backend.infer(stream["images"][:1])), stream["alpha"][:1], atol=TOLERANCE)


@pytest.mark.slow
def test_the_pt2_export_equals_eager_over_a_stream(pair: tuple, stream: dict[str, Any]) -> None:
    missing = aoti_compiler_missing()
    if missing is not None:
        unavailable(missing)
    out = export_pair(pair[0], pair[0] / "pt2", "--formats", "pt2", *EXPORT_OPTIONS)
    _check_stream(_backend(out, "aotinductor"), stream)


def test_the_scheduler_carries_the_state_and_resets_it(pair: tuple, folder: Path) -> None:
    _, spd, spgm = pair
    backend = _backend(folder, "onnxruntime")
    clip = _scene(1, 12)
    images = _images(clip)
    scheduler = KeyframeScheduler(backend, KeyframePolicy(interval=0))
    assert scheduler.recurrent
    # Interval 0 runs frame by frame for a recurrent model, the state carried as eager carries it.
    np.testing.assert_allclose(scheduler(images[:10]), _eager(spd, spgm, images[:10])[0], atol=TOLERANCE)
    assert scheduler.stats.keyframes == list(range(10)) and scheduler.stats.state_resets == []

    def fresh(image: np.ndarray) -> np.ndarray:
        return KeyframeScheduler(backend, KeyframePolicy(interval=0))(image)  # type: ignore[no-any-return]

    carried = scheduler(images[10:11])
    assert np.abs(carried - fresh(images[10:11])).max() > 1e-5  # the state shows
    scheduler.reset()  # a reconnect
    np.testing.assert_allclose(scheduler(images[10:11]), fresh(images[10:11]), atol=1e-6)
    scheduler.reset_state("gap")  # what the streaming layer calls after a gap in the timestamps
    np.testing.assert_allclose(scheduler(images[11:12]), fresh(images[11:12]), atol=1e-6)
    other = _images(_scene(7, 2) // 3 + 150)  # another, brighter scene: a cut
    np.testing.assert_allclose(scheduler(other[:1]), fresh(other[:1]), atol=1e-6)
    bigger = _images(cv2.resize(clip[0], (160, 128))[None])  # another working size
    np.testing.assert_allclose(scheduler(bigger), fresh(bigger), atol=1e-6)
    # Frames counted as seen: 0-10, then 11 after the reset, 12 after the gap, 13 the cut, 14 the new size.
    assert scheduler.stats.cuts == [13]
    assert scheduler.stats.state_resets == [(11, "reset"), (12, "gap"), (13, "cut"), (14, "size")]
    scheduler.reset()
    scheduler.reset()  # nothing to drop: not counted again
    assert scheduler.stats.state_resets[-1] == (15, "reset") and len(scheduler.stats.state_resets) == 5
    scheduler.restart()
    assert scheduler.stats.state_resets == [] and scheduler.state == ()


class Recording:
    """A backend whose SPGM runs are recorded: the state each read and the state it gave."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.name, self.device, self.state_tensors = backend.name, backend.device, backend.state_tensors
        self.runs: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []

    def infer(self, image: np.ndarray) -> np.ndarray:
        return self.inner.infer(image)  # type: ignore[no-any-return]

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        return self.inner.run_spd(image)  # type: ignore[no-any-return]

    def run_spgm(self, image: Any, features: Any, state: Any = None) -> Any:
        alpha, new_state = self.inner.run_spgm(image, features, state)
        self.runs.append((tuple(state), new_state))
        return alpha, new_state


def test_a_ramped_keyframe_runs_twice_on_one_state_and_keeps_the_corrected_one(folder: Path) -> None:
    recording = Recording(_backend(folder, "onnxruntime"))
    scheduler = KeyframeScheduler(recording, KeyframePolicy(interval=3, ramp=3))
    scheduler(_images(_scene(2, 5)))
    assert scheduler.stats.keyframes == [0, 3]
    runs = recording.runs
    assert len(runs) == 6  # frame 3, a keyframe, runs propagated and corrected
    assert runs[0][0] == ()  # the stream starts from zeros
    for before, after in itertools.pairwise(runs[:4]):
        assert after[0] is before[1]  # frames 1-3 read the previous frame's state
    propagated, corrected, following = runs[3], runs[4], runs[5]
    assert corrected[0] is propagated[0]  # both runs of the keyframe read the same state
    assert following[0] is corrected[1] and following[0] is not propagated[1]  # the corrected one is kept


def test_two_streams_never_share_state(folder: Path) -> None:
    matter = Matter(folder, backend="onnxruntime", work_size=WORK_HW[1], keyframe_interval=4)
    assert matter.backend.state_tensors
    clips = [_scene(3, 10), _scene(4, 10)[:, ::-1].copy()]
    alone = []
    for clip in clips:
        stream = matter.new_stream()
        alone.append(np.stack([matter(frame, stream) for frame in clip]))
    streams = [matter.new_stream(), matter.new_stream()]
    together: list[list[np.ndarray]] = [[], []]
    for index in range(10):
        for which in (0, 1):
            together[which].append(matter(clips[which][index], streams[which]))
    for which in (0, 1):
        np.testing.assert_allclose(np.stack(together[which]), alone[which], atol=1e-6)
    assert np.abs(alone[0] - alone[1]).max() > 0.01  # two different clips, so mixing them up would show


def test_a_state_of_the_wrong_shape_is_refused_in_one_line(folder: Path) -> None:
    for backend in (_backend(folder, "onnxruntime"), _bound_backend(folder)):
        image = _input(backend, np.random.default_rng(0).random((1, 3, *WORK_HW), dtype=np.float32))
        features = backend.run_spd(image)
        _, state = backend.run_spgm(image, features, ())
        assert [tuple(s.shape) for s in state] == [(1, 8, 6, 8), (1, 8, 12, 16), (1, 4, 24, 32)]
        wrong = (state[0], state[0], state[2])
        with pytest.raises(SpgimError) as refused:
            backend.run_spgm(image, features, wrong)
        message = str(refused.value)
        assert "state_os8" in message and "(1, 8, 6, 8)" in message and "expected (1, 8, 12, 16)" in message
        assert "\n" not in message
        with pytest.raises(SpgimError, match=r"takes 3 state tensors \(state_os16, state_os8, state_os4\), got 2"):
            backend.run_spgm(image, features, state[:2])


def test_a_stateless_export_keeps_its_interface(model: Path) -> None:
    backend = _backend(model, "onnxruntime")
    assert backend.state_tensors == ()
    scheduler = KeyframeScheduler(backend, KeyframePolicy(interval=0))
    images = _images(_scene(5, 3))
    np.testing.assert_array_equal(scheduler(images), backend.infer(images))  # interval 0: still one batched call
    scheduler.reset()
    scheduler.reset_state("gap")
    assert scheduler.stats.state_resets == [] and not scheduler.recurrent
    alpha, state = backend.run_spgm(images[:1], backend.run_spd(images[:1]), ())
    assert state == () and alpha.shape == (1, 1, *WORK_HW)
    with pytest.raises(SpgimError, match="takes 0 state tensors"):
        backend.run_spgm(images[:1], backend.run_spd(images[:1]), (alpha,))


class TimedSource(Source):
    """Black frames at the given presentation times (in frames of 1/25 s)."""

    def __init__(self, pts: list[int]) -> None:
        self.pts = pts
        self.info = VideoInfo(width=64, height=64, time_base=Fraction(1, 25), rate=Fraction(25))

    def items(self, stop: threading.Event) -> Iterator[VideoFrame]:
        for index, pts in enumerate(self.pts):
            yield VideoFrame(index, np.zeros((64, 64, 3), np.uint8), pts, Fraction(1, 25), captured=0.0)


@pytest.mark.parametrize("recurrent", [True, False])
def test_a_gap_in_the_timestamps_resets_the_state_before_its_frame(recurrent: bool) -> None:
    events: list[Any] = []

    def matte(images: np.ndarray) -> np.ndarray:
        events.append(len(images))
        return np.zeros(images.shape[:3], np.float32)

    reset = (lambda reason: events.append(reason)) if recurrent else None
    plan = Plan(outputs={}, background=None, batch=4, reset_state=reset)
    # 0.72 s forward (over 0.5 s and 3 frames), then back in time: two gaps.
    Pipeline(TimedSource([0, 1, 2, 20, 21, 5]), matte, plan).run()
    assert events == ([3, "gap", 1, 1, "gap", 1] if recurrent else [4, 2])


def test_what_counts_as_a_gap() -> None:
    assert not timestamp_gap(None, 3.0, Fraction(25)) and not timestamp_gap(1.0, None, None)
    assert not timestamp_gap(0.0, 0.04, Fraction(25)) and not timestamp_gap(0.0, 0.5, Fraction(25))
    assert timestamp_gap(0.0, 0.52, Fraction(25)) and timestamp_gap(1.0, 0.96, Fraction(25))
    # Slow sources: three frame intervals when they are longer than 0.5 s; 0.5 s without a rate.
    assert not timestamp_gap(0.0, 1.4, Fraction(2)) and timestamp_gap(0.0, 1.6, Fraction(2))
    assert timestamp_gap(0.0, 0.6, None)


def test_a_missing_optional_key_equals_none(tmp_path: Path) -> None:
    config = get_config("live")
    assert "recurrent" not in config["spgm"]
    assert config_differences(config, {**config, "spgm": {**config["spgm"], "recurrent": None}}) == []
    assert config_differences({"recurrent": None}, {}) == [] and config_differences({}, {"recurrent": None}) == []
    assert config_differences({"recurrent": LIVE_RECURRENT}, {}) == [
        f"recurrent: expected {LIVE_RECURRENT!r}, found nothing"
    ]
    # A checkpoint saved before the key existed loads for a configuration that says None.
    save_checkpoint(tmp_path / "spgm.pt", branch="spgm", config=config, model=build_model("spgm", config))
    wanted = {**config, "spgm": {**config["spgm"], "recurrent": None}}
    assert load_checkpoint(tmp_path / "spgm.pt", branch="spgm", config=wanted)["branch"] == "spgm"
    with pytest.raises(SpgimError, match=r"spgm\.recurrent: expected"):
        load_checkpoint(
            tmp_path / "spgm.pt",
            branch="spgm",
            config={**config, "spgm": {**config["spgm"], "recurrent": LIVE_RECURRENT}},
        )
