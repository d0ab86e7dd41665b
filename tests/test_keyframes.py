"""Keyframed SPD: when SPD runs, what SPGM is guided by between keyframes, and that interval 0 is today's path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from model_pairs import export_tiny

from spgim.runtime.keyframes import KeyframePolicy, KeyframeScheduler, _guide
from spgim.runtime.matting import Matter, working_size
from spgim.runtime.registry import BACKENDS, BackendOptions, open_backend
from spgim.train.models.spd import saliency_target


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("keyframes"), formats="torchscript,onnx,openvino", precision="fp32,fp16")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped tiny reference pair in ONNX: unlike random weights, its SPGM follows its guide."""
    from model_pairs import export_pair

    from spgim.reference import reference_checkpoint

    folder = tmp_path_factory.mktemp("trained")
    for branch in ("spd", "spgm"):
        (folder / f"{branch}.pt").symlink_to(reference_checkpoint(branch, "tiny"))
    return export_pair(folder, folder / "model", "--formats", "onnx", "--height", "128", "--width", "128", "--dynamic")


def _scene(seed: int, frames: int, height: int = 96, width: int = 160) -> np.ndarray:
    """A still background (large blotches of colour, fine noise) with a bright disc moving two pixels a frame."""
    rng = np.random.default_rng(seed)
    blotches = cv2.resize(
        rng.integers(0, 256, (4, 6, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC
    )
    noise = rng.integers(-12, 13, (height, width, 3))
    base = np.clip(blotches.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    clip = []
    for t in range(frames):
        frame = base.copy()
        cv2.circle(frame, (30 + 2 * t, height // 2), 18, (250, 240, 230), -1)
        clip.append(frame)
    return np.stack(clip)


class CountingBackend:
    """A real backend whose SPD calls are counted (per frame of each call)."""

    def __init__(self, backend: Any) -> None:
        self.inner = backend
        self.name, self.device = backend.name, backend.device
        self.spd_frames: list[int] = []
        self.seen = 0

    def infer(self, image: np.ndarray) -> np.ndarray:
        return self.inner.infer(image)  # type: ignore[no-any-return]

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        self.spd_frames.append(self.seen)
        return self.inner.run_spd(image)  # type: ignore[no-any-return]

    def run_spgm(self, image: Any, features: Any) -> Any:
        self.seen += len(image)
        return self.inner.run_spgm(image, features)


def _working_images(frames: np.ndarray, work: int = 128) -> np.ndarray:
    height, width = working_size(*frames.shape[1:3], work)
    resized = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
    return np.ascontiguousarray(resized.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def _backend(folder: Path, name: str = "onnxruntime", precision: str = "fp32") -> Any:
    from spgim.runtime.artifacts import load_artifacts

    backend, _, _ = open_backend(BACKENDS[name], load_artifacts(folder), BackendOptions(precision=precision))
    return backend


def test_spd_runs_every_k_frames_counted(folder: Path) -> None:
    images = _working_images(_scene(0, 12))
    counting = CountingBackend(_backend(folder))
    scheduler = KeyframeScheduler(counting, KeyframePolicy(interval=4))
    alphas = [scheduler(images[i : i + 1]) for i in range(12)]
    assert counting.spd_frames == [0, 4, 8]
    assert scheduler.stats.keyframes == [0, 4, 8] and scheduler.stats.cuts == []
    assert all(a.shape == (1, 1, *images.shape[2:]) and a.dtype == np.float32 for a in alphas)
    # A batch of frames is scheduled frame by frame, in order.
    batched = KeyframeScheduler(CountingBackend(_backend(folder)), KeyframePolicy(interval=4))
    np.testing.assert_allclose(batched(images), np.concatenate(alphas), atol=1e-6)
    assert batched.stats.keyframes == [0, 4, 8]


def test_spd_runs_at_a_scene_cut(folder: Path) -> None:
    clip = np.concatenate([_scene(0, 7), _scene(1, 5)])  # a cut to another background at frame 7
    counting = CountingBackend(_backend(folder))
    scheduler = KeyframeScheduler(counting, KeyframePolicy(interval=100))
    scheduler(_working_images(clip))
    assert counting.spd_frames == [0, 7]
    assert scheduler.stats.cuts == [7]
    # The moving disc alone is no cut.
    calm = KeyframeScheduler(CountingBackend(_backend(folder)), KeyframePolicy(interval=100))
    calm(_working_images(_scene(2, 12)))
    assert calm.stats.keyframes == [0]


def test_between_keyframes_spgm_is_guided_by_the_previous_alpha(folder: Path) -> None:
    images = _working_images(_scene(0, 3))
    backend = _backend(folder)
    scheduler = KeyframeScheduler(backend, KeyframePolicy(interval=8, guide_sigma=1.0))
    first = scheduler(images[:1])
    second = scheduler(images[1:2])
    _mask, *features = backend.run_spd(images[:1])
    expected = backend.run_spgm(images[1:2], (_guide(first, 1.0), *features))
    np.testing.assert_array_equal(second, expected)
    # ... and not by SPD's mask of either frame (a random-weight SPGM barely reacts to its guide, so compare inputs).
    for frame in (0, 1):
        assert not np.allclose(_guide(first, 1.0), backend.run_spd(images[frame : frame + 1])[0], atol=1e-3)


@pytest.mark.parametrize("interval", [0, 4])
def test_smoothing_blends_where_still_and_follows_where_moving(folder: Path, interval: int) -> None:
    backend = _backend(folder)
    scene = _scene(0, 1)[0]
    # Frames 0-1 the same picture (still everywhere), frame 2 far brighter everywhere (moving everywhere).
    frames = np.stack([scene, scene, np.clip(scene.astype(np.int64) + 160, 0, 255).astype(np.uint8)])
    images = _working_images(frames)
    raw = KeyframeScheduler(backend, KeyframePolicy(interval=interval))
    smooth = KeyframeScheduler(backend, KeyframePolicy(interval=interval, smoothing=0.5))
    plain = [raw(images[i : i + 1]) for i in range(3)]
    out = [smooth(images[i : i + 1]) for i in range(3)]
    np.testing.assert_array_equal(out[0], plain[0])
    np.testing.assert_allclose(out[1], 0.5 * plain[0] + 0.5 * plain[1], atol=1e-6)
    np.testing.assert_allclose(out[2], plain[2], atol=1e-6)
    if interval:  # the guide between keyframes is the unsmoothed alpha, so the raw alphas are the same
        np.testing.assert_array_equal(smooth.previous_alpha, plain[2])
    # The same blend on torch tensors (the GPU path), here on the CPU.
    tensors = KeyframeScheduler(backend, KeyframePolicy(interval=interval, smoothing=0.5))
    for i in range(2):
        blended = tensors._smooth(torch.from_numpy(images[i : i + 1]), torch.from_numpy(plain[i]))
    np.testing.assert_allclose(blended.numpy(), out[1], atol=1e-6)


def test_matter_refuses_smoothing_outside_its_range(folder: Path) -> None:
    from spgim.errors import SpgimError

    with pytest.raises(SpgimError, match="smoothing must be at least 0 and below 1"):
        Matter(folder, backend="onnxruntime", smoothing=1.0)
    with pytest.raises(SpgimError, match=r"keyframe ramp must be 0 .* got -1"):
        Matter(folder, backend="onnxruntime", keyframe_interval=4, keyframe_ramp=-1)
    with pytest.raises(SpgimError, match=r"keyframe interval must be 0 .* got -1"):
        Matter(folder, backend="onnxruntime", keyframe_interval=-1)


def test_a_keyframes_correction_is_phased_in(trained: Path) -> None:
    images = _working_images(_scene(0, 7))
    backend = _backend(trained)
    hard = KeyframeScheduler(backend, KeyframePolicy(interval=4))
    drifting = KeyframeScheduler(backend, KeyframePolicy(interval=100))  # propagation only after frame 0
    counting = CountingBackend(backend)
    ramped = KeyframeScheduler(counting, KeyframePolicy(interval=4, ramp=2))
    switched = [hard(images[i : i + 1]) for i in range(7)]
    propagated = [drifting(images[i : i + 1]) for i in range(7)]
    out = [ramped(images[i : i + 1]) for i in range(7)]
    assert ramped.stats.keyframes == [0, 4]
    assert counting.seen == 8  # SPGM on every frame, and once more at frame 4 as propagation would have run it
    for i in range(4):
        np.testing.assert_array_equal(out[i], switched[i])
    assert np.abs(switched[4] - propagated[4]).max() > 0.01  # the keyframe does correct something
    # Halfway from propagation's alpha to the keyframe's at frame 4, then the keyframed stream's own alpha:
    # the guide carried forward is the corrected alpha.
    np.testing.assert_allclose(out[4], 0.5 * (propagated[4] + switched[4]), atol=1e-6)
    np.testing.assert_allclose(out[5], switched[5], atol=1e-6)
    np.testing.assert_allclose(out[6], switched[6], atol=1e-6)
    # A scene cut switches at once: nothing from before the cut is phased in.
    clip = _working_images(np.concatenate([_scene(0, 7), _scene(1, 5)]))
    cut_counting = CountingBackend(backend)
    at_cut = KeyframeScheduler(cut_counting, KeyframePolicy(interval=100, ramp=4))
    plain = KeyframeScheduler(backend, KeyframePolicy(interval=100))
    np.testing.assert_array_equal(at_cut(clip), plain(clip))
    assert at_cut.stats.cuts == [7] and cut_counting.seen == 12


@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.0])
def test_guide_is_spd_training_target_made_from_the_alpha(sigma: float) -> None:
    alpha = np.random.default_rng(1).random((2, 1, 64, 96), dtype=np.float32)
    expected = saliency_target(torch.from_numpy(alpha), (16, 24), sigma).numpy()
    np.testing.assert_allclose(_guide(alpha, sigma), expected, atol=1e-5)
    np.testing.assert_allclose(_guide(torch.from_numpy(alpha), sigma).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("backend", "precision"),
    [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("torchscript", "fp32"), ("openvino", "fp32")],
)
def test_branches_one_at_a_time_equal_the_pair(folder: Path, backend: str, precision: str) -> None:
    runner = _backend(folder, backend, precision)
    images = _working_images(_scene(3, 2))
    np.testing.assert_allclose(runner.run_spgm(images, runner.run_spd(images)), runner.infer(images), atol=1e-6)


def test_interval_zero_is_the_per_frame_path(folder: Path) -> None:
    frames = _scene(0, 6)
    matter = Matter(folder, backend="onnxruntime", work_size=128, keyframe_interval=0, upsampling="bilinear")
    alpha = matter(frames)
    images = _working_images(frames)
    expected = matter.backend.infer(images)[:, 0]
    expected = np.stack(
        [cv2.resize(a, (frames.shape[2], frames.shape[1]), interpolation=cv2.INTER_LINEAR) for a in expected]
    )
    np.testing.assert_array_equal(alpha, np.clip(expected, 0, 1))
    assert matter.scheduler.stats.keyframes == list(range(6))


def test_matter_takes_the_exports_stream_defaults(folder: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    for sidecar in copy.glob("spgm*.json"):
        data = json.loads(sidecar.read_text())
        data["stream"] = {"work_size": 96, "keyframe_interval": 3, "guide_sigma": 1.0}
        sidecar.write_text(json.dumps(data))
    matter = Matter(copy, backend="onnxruntime")
    assert (matter.work_size, matter.keyframe_interval) == (96, 3)
    matter(_scene(0, 7))
    assert matter.scheduler.stats.keyframes == [0, 3, 6]
    overridden = Matter(copy, backend="onnxruntime", work_size=128, keyframe_interval=0)
    assert (overridden.work_size, overridden.keyframe_interval) == (128, 0)


def test_export_records_how_to_stream(folder: Path) -> None:
    from spgim.runtime.artifacts import load_artifacts

    for artifact in load_artifacts(folder):
        if artifact.branch in ("spd", "spgm"):
            # tiny's stream section; random checkpoints carry no mask_sigma, so tiny's recipe gives it.
            expected = {"work_size": 320, "keyframe_interval": 0, "keyframe_ramp": 4, "smoothing": 0.0}
            assert artifact.sidecar["stream"] == {**expected, "guide_sigma": 1.0}


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript", "openvino"])
def test_guided_upsampling_runs_the_exported_graph_on_the_backends_engine(folder: Path, backend: str) -> None:
    from spgim.train.models.upsample import GuidedUpsampler

    frames = _scene(4, 2, height=90, width=150)
    guided = Matter(folder, backend=backend, work_size=128, keyframe_interval=0, upsampling="guided")
    plain = Matter(folder, backend=backend, work_size=128, keyframe_interval=0, upsampling="bilinear")
    assert (guided.upsampling, plain.upsampling) == ("guided", "bilinear")
    images = _working_images(frames)
    low = plain.backend.infer(images)
    with torch.no_grad():
        expected = GuidedUpsampler()(torch.from_numpy(low), torch.from_numpy(images), torch.from_numpy(frames))
    alpha = guided(frames)
    assert alpha.shape == (2, 90, 150)
    np.testing.assert_allclose(alpha, expected[:, 0].numpy(), atol=1e-4)
    assert not np.allclose(alpha, plain(frames), atol=1e-4)
    # auto on the CPU is the same filter in OpenCV: the graph costs more than a live frame's budget here.
    auto = Matter(folder, backend=backend, work_size=128, keyframe_interval=0)
    assert auto.upsampling == "guided-cv2"
    np.testing.assert_allclose(auto(frames), alpha, atol=1e-4)


def test_matte_command_keyframes_and_says_so(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import av
    from media import make_clip

    from spgim.cli import main

    clip = make_clip(tmp_path / "clip.mp4", size=(160, 96), frames=10).path
    out = tmp_path / "out.mp4"
    argv = ["matte", str(clip), "--model", str(folder), "--output", str(out), "--backend", "onnxruntime"]
    argv += ["--keyframe-interval", "4", "--keyframe-ramp", "2", "--work-size", "128", "--upsample", "guided"]
    argv += ["--preset", "ultrafast"]
    assert main(argv) == 0
    assert "SPD on 3 keyframes (interval 4, ramp 2)" in capsys.readouterr().err
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
    bad = ["matte", str(clip), "--model", str(folder), "--output", str(tmp_path / "b.mp4"), "--preset", "warp"]
    assert main(bad) != 0
    assert "unknown encoder preset 'warp'" in capsys.readouterr().err


def test_live_sources_encode_for_latency() -> None:
    from spgim.streaming.outputs import _quality_options

    assert _quality_options("h264", None)["preset"] == "veryfast"
    live = _quality_options("h264", None, live=True)
    assert (live["preset"], live["tune"]) == ("ultrafast", "zerolatency")
    assert _quality_options("h264", None, live=True, preset="superfast")["preset"] == "superfast"


def test_shrink_is_area_resizing_halved_first_when_it_can() -> None:
    from spgim.runtime.matting import shrink

    frame = cv2.resize(_scene(5, 1)[0], (1280, 720), interpolation=cv2.INTER_CUBIC)  # photo-like, not noise
    direct = cv2.resize(frame, (384, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert shrink(frame, 384, 224).shape == (224, 384, 3)
    assert np.abs(shrink(frame, 384, 224).astype(np.float32) - direct).mean() < 2.0
    # Exact halvings give cv2's direct area filter up to the rounding of the intermediate image.
    exact = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert np.abs(shrink(frame, 320, 180).astype(np.int16) - exact).max() <= 1
