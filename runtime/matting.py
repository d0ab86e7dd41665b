"""``Matter``: an exported model folder behind one call, ``frames -> alpha``.

Pre- and post-processing live here once: uint8 RGB frames are resized to the working size (the
longer side at most ``work_size``, both sides multiples of 32, aspect kept), scaled to [0, 1],
run through SPD -> SPGM (SPD on keyframes only when a keyframe interval is set, see
:mod:`.keyframes`), and the alpha is resized back to each frame's size: with numpy and cv2 on the
host for CPU backends, with torch on the device for GPU backends (only the final alpha comes back).
The working size, keyframe interval, keyframe ramp and smoothing default to what the export recorded
for its configuration (the ``stream`` entry of SPGM's sidecar, :class:`spgim.stream_defaults.StreamDefaults`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from spgim.errors import SpgimError
from spgim.sizes import working_size
from spgim.stream_defaults import StreamDefaults

from .artifacts import check_size, load_artifacts
from .device_frames import matte_on_device
from .keyframes import KeyframePolicy, KeyframeScheduler
from .protocol import Backend, DeviceBackend
from .ranking import rank
from .registry import BACKENDS, BackendOptions, backend_record, open_backend, runnable
from .upsampling import (
    check_upsampling,
    choose_upsampling,
    cv2_guided_upsampler,
    open_upsampler,
    upsampler_artifact,
)


def shrink(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame area-resized to ``width`` x ``height``, halved first while it is at least twice as large.

    cv2's area filter has a fast path for exact integer ratios: 1280x720 -> 384x224 takes 6.0 ms direct and
    2.8 ms through 640x360 (one core), a tenth of a live frame's budget saved.
    """
    while frame.shape[0] >= 2 * height and frame.shape[1] >= 2 * width and not (frame.shape[0] | frame.shape[1]) & 1:
        frame = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


class Matter:
    """Alpha mattes of RGB frames from an ``spgim export`` folder.

    Args:
        model_dir: the export folder (``spgim-export.json`` and sidecars).
        backend: ``"auto"`` or a key of :data:`spgim.runtime.registry.BACKENDS` (``"onnxruntime"``,
            ``"openvino"``, ``"aotinductor"``, ``"torchscript"``, ``"onnxruntime-twin"``, and on a GPU
            ``"tensorrt"``, ``"onnxruntime-trt"``, ``"onnxruntime-cuda"``, ``"torchscript-cuda"``).
            ``"auto"`` times every backend this machine can run on the folder once, caches the ranking next
            to the model (:mod:`.ranking`) and takes the fastest; :attr:`selection` says which and why.
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"int8"``, or ``"auto"``: the fastest measured precision whose
            alpha stays within 5e-3 mean of fp32's.
        work_size, keyframe_interval, keyframe_ramp, smoothing: see
            :class:`spgim.stream_defaults.StreamDefaults`; None takes the export's. With a keyframe
            interval, frames must come in stream order.
        upsampling: how the alpha reaches the frame's size: ``"guided"`` (the export's upsample graph on the
            backend's engine, see :mod:`.upsampling`), ``"guided-cv2"`` (the same filter in OpenCV, CPU only),
            ``"bilinear"``, or ``"auto"``: the graph on a GPU, guided-cv2 on the CPU (where the graph costs more
            than a live frame's budget); bilinear for an export without an upsample graph.
        threads: CPU threads for the CPU engines (0: their default, one per physical core).
        gpu: CUDA device index for the GPU backends.
        plugin: the TST attention plugin library for engines (default: looked up, see
            :func:`spgim.tst_plugin.find_plugin_library`).
        spinning: let ONNX Runtime's idle threads spin (faster alone, slower beside decode/encode threads).

    Attributes:
        backend_name: which engine and precision runs.
        precision: the precision that runs (what was asked, or what ``"auto"`` picked).
        selection: one line saying how the backend was chosen.
        device: ``"cpu"`` or ``"cuda:N"``, where the backend runs and :meth:`alpha_on_device` returns the alpha.
        stream: the export's stream defaults with the caller's values laid over them: what runs.
        scheduler: the keyframe scheduler; ``scheduler.stats`` counts the frames where SPD ran.
            :meth:`new_stream` makes another one over the same engine, for another stream.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        backend: str = "auto",
        precision: str = "fp32",
        work_size: int | None = None,
        keyframe_interval: int | None = None,
        upsampling: str = "auto",
        threads: int = 0,
        gpu: int = 0,
        plugin: str | Path | None = None,
        spinning: bool = True,
        smoothing: float | None = None,
        keyframe_ramp: int | None = None,
    ) -> None:
        check_upsampling(upsampling)
        self.artifacts = load_artifacts(model_dir)
        any_spgm = next((a for a in self.artifacts if a.branch == "spgm"), None)
        if any_spgm is None or not any(a.branch == "spd" for a in self.artifacts):
            raise SpgimError(f"{model_dir}: the export lists no SPD and SPGM pair; export both branches")
        recorded = StreamDefaults.from_record(any_spgm.sidecar.get("stream"), f"{any_spgm.path.name}.json's stream")
        self.stream = recorded.overridden(
            work_size=work_size, keyframe_interval=keyframe_interval, keyframe_ramp=keyframe_ramp, smoothing=smoothing
        )
        self.work_size = self.stream.work_size
        interval = self.stream.keyframe_interval
        options = BackendOptions(precision=precision, threads=threads, gpu=gpu, plugin=plugin, spinning=spinning)
        if backend != "auto":
            backend_record(backend)
        if backend == "auto" or precision == "auto":
            backend, precision, self.selection = self._measured_choice(model_dir, backend, precision, options, interval)
            options = BackendOptions(precision=precision, threads=threads, gpu=gpu, plugin=plugin, spinning=spinning)
        else:
            self.selection = f"{backend} {precision} as asked"
        record = backend_record(backend)
        self.backend: Backend
        self.backend, self.spd_artifact, self.spgm_artifact = open_backend(record, self.artifacts, options)
        self.precision = precision
        self.backend_name = self.backend.name
        self.device = self.backend.device
        stream = self.stream
        policy = KeyframePolicy(
            interval=interval, guide_sigma=stream.guide_sigma, smoothing=stream.smoothing, ramp=stream.keyframe_ramp
        )
        self.scheduler = KeyframeScheduler(self.backend, policy)
        self.keyframe_interval = interval
        graph = upsampler_artifact(self.artifacts, self.spgm_artifact)
        self.upsampling = choose_upsampling(upsampling, self.device, graph)
        self.upsampler = None
        if graph is not None and self.upsampling == "guided":
            self.upsampler = open_upsampler(graph, device=self.device, threads=threads)
        elif graph is not None and self.upsampling == "guided-cv2":
            self.upsampler = cv2_guided_upsampler(graph)

    def _measured_choice(
        self, model_dir: str | Path, backend: str, precision: str, options: BackendOptions, keyframe_interval: int
    ) -> tuple[str, str, str]:
        names = [name for name, record in BACKENDS.items() if record.in_auto] if backend == "auto" else [backend]
        wanted = [(n, p) for n in names for p in (BACKENDS[n].precisions if precision == "auto" else (precision,))]
        reasons = {item: runnable(BACKENDS[item[0]], self.artifacts, item[1]) for item in wanted}
        candidates = [item for item, reason in reasons.items() if reason is None]
        if not candidates:
            why = "; ".join(f"{name} {p}: {reason}" for (name, p), reason in reasons.items())
            raise SpgimError(f"no backend can run {model_dir} in {precision}: {why}")
        work_hw = self._ranking_size()
        ranking = rank(model_dir, self.artifacts, candidates, work_hw, options)
        picked = ranking.choose(backend, precision, keyframe_interval)
        return picked.backend, picked.precision, ranking.explain(picked, work_hw, keyframe_interval)

    def _ranking_size(self) -> tuple[int, int]:
        """The working size auto measures at: the export's aspect with its longer side at ``work_size``."""
        any_spgm = next(a for a in self.artifacts if a.branch == "spgm")
        width, height = any_spgm.sidecar.get("export_size", [self.work_size, self.work_size])
        work_h, work_w = working_size(height, width, self.work_size)
        profile = any_spgm.sidecar.get("profile", {})
        if profile.get("max"):
            work_w, work_h = min(work_w, profile["max"][0]), min(work_h, profile["max"][1])
        if profile.get("min"):
            work_w, work_h = max(work_w, profile["min"][0]), max(work_h, profile["min"][1])
        return work_h, work_w

    def _batch(self, frames: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Frames as ``(N, H, W, 3)`` and the working size, checked against the artifact's profile."""
        batch = frames[None] if frames.ndim == 3 else frames
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise SpgimError(f"frames must be uint8 (N, H, W, 3) RGB, got {batch.dtype} {batch.shape}")
        work_h, work_w = working_size(batch.shape[1], batch.shape[2], self.work_size)
        check_size(self.spgm_artifact, work_h, work_w)
        return batch, work_h, work_w

    def new_stream(self) -> KeyframeScheduler:
        """A fresh keyframe scheduler over this Matter's engine and policy, for one more stream.

        Pass it as ``scheduler=`` to :meth:`__call__`: streams with their own schedulers share the engine but
        never each other's cached features or recurrent state (the first frame of each is a keyframe).
        """
        return KeyframeScheduler(self.backend, self.scheduler.policy)

    def alpha_on_device(self, frames: np.ndarray, scheduler: KeyframeScheduler | None = None) -> Any:
        """As :meth:`__call__`, but the alpha is a float32 torch tensor on :attr:`device` (no download)."""
        import torch

        if self.device == "cpu":
            return torch.from_numpy(self(frames, scheduler))
        batch, work_h, work_w = self._batch(frames)
        run = scheduler if scheduler is not None else self.scheduler
        alpha = matte_on_device(
            cast(DeviceBackend, self.backend), batch, work_h, work_w, run=run, upsample=self.upsampler
        )
        return alpha if frames.ndim == 4 else alpha[0]

    def __call__(self, frames: np.ndarray, scheduler: KeyframeScheduler | None = None) -> np.ndarray:
        """Alpha in [0, 1], float32, ``(N, H, W)`` for uint8 frames ``(N, H, W, 3)`` (or one ``(H, W, 3)``).

        ``scheduler``: the stream these frames belong to (from :meth:`new_stream`); None: :attr:`scheduler`.
        """
        if self.device != "cpu":
            return np.asarray(self.alpha_on_device(frames, scheduler).cpu().numpy(), dtype=np.float32)
        batch, work_h, work_w = self._batch(frames)
        height, width = batch.shape[1:3]
        resized = np.stack([shrink(f, work_w, work_h) for f in batch])
        image = np.ascontiguousarray(resized.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        alpha = (scheduler if scheduler is not None else self.scheduler)(image)
        # Clipped in place where this call made the array (an upsampler's output, a resize); the scheduler's
        # own alpha is its state for the next frame, so that one is copied.
        owned = self.upsampler is not None
        if self.upsampler is not None:
            alpha = self.upsampler(alpha, image, batch)
        alpha = alpha[:, 0]
        if alpha.shape[1:] != (height, width):
            alpha = np.stack([cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR) for a in alpha])
            owned = True
        alpha = np.clip(alpha, 0.0, 1.0, out=alpha if owned else None)
        return alpha if frames.ndim == 4 else alpha[0]
