"""Keyframed SPD: SPD on keyframes only, SPGM every frame with SPD's cached features.

SPD answers "what is the object" and changes slowly; SPGM answers "where exactly is its edge" and
follows every frame (docs/design.md). So in a stream SPD runs on keyframes (every ``interval`` frames,
on the first frame, when the working size changes, and on a scene cut), its features are kept, and
between keyframes SPGM reads them with the previous frame's alpha as its guide mask. The guide is
made the way SPD's training target is made from the true alpha (Eq. 2's S(a): area-downsampled to
output stride 4, Gaussian-blurred), so SPGM sees the kind of mask it was trained with.

The scheduler works on whatever the backend takes (numpy arrays on the CPU, torch tensors on a
GPU) through :class:`spgim.runtime.protocol.Backend`'s ``run_spd``/``run_spgm``; it lives here
once for every backend.

A recurrent SPGM's state is the stream's too, so the scheduler owns it: each SPGM run reads the previous
frame's state and the next frame reads its new one (interval 0 then runs frame by frame). It starts again
from zeros on :meth:`KeyframeScheduler.reset` (a new stream, a reconnect), a scene cut, a change of working
size, and :meth:`KeyframeScheduler.reset_state` (a gap in the stream's timestamps); ``stats.state_resets``
counts each. A keyframe's ramp runs SPGM twice on the same previous state and keeps the corrected run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np

from .protocol import Backend, DeviceBackend

# A scene cut: the mean absolute difference of two consecutive frames' grey thumbnails (each pixel the
# mean of a 16 x 16 block, values in [0, 1]) above this. Objects moving over a still background stay far
# below it (the demo clip: at most 0.02); a cut between two photographs is typically 0.1-0.3.
SCENE_CUT_THRESHOLD = 0.08
THUMBNAIL_BLOCK = 16
GUIDE_STRIDE = 4  # SPD's mask is at output stride 4
# Temporal smoothing's motion gate: a pixel whose grey value (5x5 box mean of the frame difference, in [0, 1])
# changed by this much or more counts as moving and keeps its new alpha; a still one blends in the previous.
MOTION_SCALE = 0.05


@dataclass(frozen=True)
class KeyframePolicy:
    """When SPD runs. Its values come from :class:`spgim.stream_defaults.StreamDefaults`, which checks them.

    Attributes:
        interval: SPD every ``interval`` frames; 0 runs it on every frame (no propagation).
        scene_cut: thumbnail difference above which a frame is a keyframe; 0 turns cut detection off.
        guide_sigma: Gaussian sigma, in mask pixels, of the guide made from the previous alpha (the
            ``mask_sigma`` SPD was trained with).
        smoothing: temporal smoothing of the output alpha, gated by motion: where the frame is still, the
            alpha is ``smoothing`` x the previous output + the rest x the new one; where it moves (see
            ``MOTION_SCALE``), the new alpha. 0 (the default) turns it off; the guide always comes from
            the unsmoothed alpha.
        ramp: frames over which a keyframe's correction is phased in. SPD's fresh mask corrects what
            propagation drifted into, and a hard switch shows as a jump every ``interval`` frames. With
            ``ramp`` R > 1, a keyframe (not the first, not a cut) also runs SPGM as propagation would
            have, and the output moves from that to the corrected alpha in R equal steps. Costs one more
            SPGM run per keyframe; capped at ``interval``; 0 or 1 switches at once.
    """

    interval: int = 0
    scene_cut: float = SCENE_CUT_THRESHOLD
    guide_sigma: float = 1.0
    smoothing: float = 0.0
    ramp: int = 0


# Why a recurrent SPGM's state started again from zeros (KeyframeStats.state_resets).
STATE_RESET_REASONS = ("reset", "cut", "size", "gap")


@dataclass
class KeyframeStats:
    """What the scheduler did: frame indices (in the order seen) where SPD ran, and why.

    Attributes:
        state_resets: a recurrent SPGM's ``(frame index, reason)`` for each frame whose state was dropped, the
            reason one of :data:`STATE_RESET_REASONS`: ``reset`` (:meth:`KeyframeScheduler.reset`), ``cut``,
            ``size`` (the working size changed), ``gap`` (:meth:`KeyframeScheduler.reset_state`). A stream's
            first frame starts from zeros without counting.
    """

    frames: int = 0
    keyframes: list[int] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)
    state_resets: list[tuple[int, str]] = field(default_factory=list)


class KeyframeScheduler:
    """Runs SPD -> SPGM on a stream of working-size images, one frame at a time.

    Args:
        backend: any backend; its ``run_spd`` / ``run_spgm`` are called.
        policy: the keyframe policy.
    """

    def __init__(self, backend: Backend, policy: KeyframePolicy) -> None:
        self.backend = backend
        self.policy = policy
        self.stats = KeyframeStats()
        # A backend (or a wrapper of one) that predates recurrent models has no state tensors: stateless.
        self.recurrent = bool(getattr(backend, "state_tensors", ()))
        self.state: tuple[Any, ...] = ()  # a recurrent SPGM's state after the last frame; () is zeros
        self.reset()

    def reset(self) -> None:
        """Forget the cached features: the next frame is a keyframe (a new stream, a reconnect). A recurrent
        SPGM's state starts again from zeros."""
        self.reset_state("reset")
        self.features: tuple[Any, ...] | None = None
        self.previous_alpha: Any = None
        self.thumbnail: Any = None
        self.since_keyframe = 0
        self.smoothed: Any = None  # the previous output alpha, when smoothing
        self.grey: Any = None  # the previous frame's grey image, when smoothing
        self.correction: Any = None  # the last keyframe's alpha minus propagation's, while it is phased in
        self.ramp_left = 0

    def restart(self) -> None:
        """A new stream on the same model: forget the features and count keyframes from zero."""
        self.reset()
        self.stats = KeyframeStats()

    def reset_state(self, reason: str) -> None:
        """Start a recurrent SPGM's state again from zeros at the next frame, counted with ``reason`` (one of
        :data:`STATE_RESET_REASONS`) where there was a state to drop; SPD's cached features are kept.

        The streaming layer calls it with ``"gap"`` where the frames' timestamps jump
        (:func:`spgim.streaming.pipeline.timestamp_gap`). Nothing happens for a stateless SPGM.
        """
        self._drop_state(self.stats.frames, reason)

    def _drop_state(self, index: int, reason: str) -> None:
        """Zeros for the state of frame ``index``, counted as a reset where a state is dropped."""
        if reason not in STATE_RESET_REASONS:
            raise ValueError(f"state reset reason {reason!r} is not one of {STATE_RESET_REASONS}")
        if self.state:
            self.stats.state_resets.append((index, reason))
        self.state = ()

    def __call__(self, image: Any) -> Any:
        """Alpha ``(N, 1, h, w)`` float32 for images ``(N, 3, h, w)`` in [0, 1], frames in stream order."""
        if self.policy.interval == 0 and not self.recurrent:
            self.stats.keyframes.extend(range(self.stats.frames, self.stats.frames + len(image)))
            self.stats.frames += len(image)
            # The backend's own pair call: it also splits batches that a fixed-batch graph cannot take whole.
            alpha: Any
            if isinstance(image, np.ndarray):
                alpha = self.backend.infer(image)
            else:
                alpha = cast(DeviceBackend, self.backend).infer_tensor(image)
            if self.policy.smoothing <= 0:
                return alpha
            alphas = [self._smooth(image[i : i + 1], alpha[i : i + 1]) for i in range(len(image))]
        else:
            # Frame by frame: keyframes, and a recurrent SPGM's state, follow the stream in order.
            alphas = [self._smooth(image[i : i + 1], self._one(image[i : i + 1])) for i in range(len(image))]
        return alphas[0] if len(alphas) == 1 else _concatenate(alphas)

    def _spgm(self, image: Any, features: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
        """SPGM on ``image`` from the previous frame's state: ``(alpha, new_state)``; the state is not kept here."""
        if not self.recurrent:
            return self.backend.run_spgm(image, features), ()
        alpha, state = self.backend.run_spgm(image, features, self.state)
        return alpha, tuple(state)

    def _smooth(self, image: Any, alpha: Any) -> Any:
        """The motion-gated blend of ``alpha`` with the previous output (see :class:`KeyframePolicy`)."""
        if self.policy.smoothing <= 0:
            return alpha
        numpy = isinstance(image, np.ndarray)
        grey = image.mean(axis=1, keepdims=True) if numpy else image.mean(dim=1, keepdim=True)
        previous, self.grey = self.grey, grey
        if previous is None or self.smoothed is None or tuple(previous.shape) != tuple(grey.shape):
            self.smoothed = alpha
            return alpha
        motion = _box_blur(abs(grey - previous), 2)
        still = (1.0 - (motion / MOTION_SCALE).clip(0.0, 1.0)) * self.policy.smoothing
        self.smoothed = alpha + still * (self.smoothed - alpha)
        return self.smoothed

    def _one(self, image: Any) -> Any:
        index = self.stats.frames
        self.stats.frames += 1
        thumbnail = _thumbnail(image)
        cut = self._is_cut(thumbnail)
        self.thumbnail = thumbnail
        resized = self.features is not None and tuple(self.previous_alpha.shape[-2:]) != tuple(image.shape[-2:])
        stale = self.features is None or resized
        ramp = min(self.policy.ramp, self.policy.interval)
        propagated = None
        if stale or cut or self.since_keyframe >= self.policy.interval:
            if cut and not stale:
                self.stats.cuts.append(index)
            if resized or cut:
                self._drop_state(index, "size" if resized else "cut")
            if stale or cut:
                self.correction, self.ramp_left = None, 0
            elif ramp > 1:
                # What propagation would have given, from the same previous state as the keyframe's run below.
                propagated, _ = self._spgm(image, self._propagation_features())
            self.stats.keyframes.append(index)
            self.features = tuple(self.backend.run_spd(image))
            self.since_keyframe = 0
            features = self.features
        else:
            features = self._propagation_features()
        self.since_keyframe += 1
        alpha, self.state = self._spgm(image, features)
        self.previous_alpha = alpha
        if propagated is not None:
            self.correction, self.ramp_left = alpha - propagated, ramp
        if self.correction is None or self.ramp_left <= 0:
            return alpha
        self.ramp_left -= 1
        # The guide stays the corrected alpha: only the output is phased in.
        return alpha - self.correction * (self.ramp_left / ramp)

    def _propagation_features(self) -> tuple[Any, ...]:
        """SPD's cached features with the previous frame's alpha, made into a guide mask, in place of SPD's mask."""
        assert self.features is not None
        return (_guide(self.previous_alpha, self.policy.guide_sigma), *self.features[1:])

    def _is_cut(self, thumbnail: Any) -> bool:
        previous = self.thumbnail
        if self.policy.scene_cut <= 0 or previous is None or tuple(previous.shape) != tuple(thumbnail.shape):
            return False
        return float(abs(thumbnail - previous).mean()) > self.policy.scene_cut


def _pool(x: Any, factor: int) -> Any:
    """Mean over ``factor`` x ``factor`` blocks of ``(N, C, H, W)`` (H, W multiples of ``factor``), numpy or torch."""
    n, c, h, w = (int(side) for side in x.shape)
    blocks = x.reshape(n, c, h // factor, factor, w // factor, factor)
    if isinstance(x, np.ndarray):
        return blocks.mean(axis=(3, 5))
    return blocks.mean(dim=(3, 5))


def _thumbnail(image: Any) -> Any:
    """Grey thumbnail of a working-size image, one value per 16 x 16 block (sides are multiples of 32)."""
    grey = image.mean(axis=1, keepdims=True) if isinstance(image, np.ndarray) else image.mean(dim=1, keepdim=True)
    return _pool(grey.float() if not isinstance(grey, np.ndarray) else grey.astype(np.float32), THUMBNAIL_BLOCK)


def _guide(alpha: Any, sigma: float) -> Any:
    """S(alpha): the alpha area-downsampled to the mask's stride, then Gaussian-blurred (replicated borders)."""
    small = _pool(alpha, GUIDE_STRIDE)
    if sigma <= 0:
        return small
    radius = max(1, round(3 * sigma))
    if isinstance(small, np.ndarray):
        size = 2 * radius + 1
        planes = [
            cv2.GaussianBlur(plane, (size, size), sigma, borderType=cv2.BORDER_REPLICATE) for plane in small[:, 0]
        ]
        return np.stack(planes)[:, None].astype(np.float32)
    import torch
    import torch.nn.functional as F

    coords = torch.arange(-radius, radius + 1, dtype=small.dtype, device=small.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(small, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


def _box_blur(x: Any, radius: int) -> Any:
    """Mean over (2 radius + 1)^2 neighbourhoods of ``(1, 1, H, W)``, borders replicated; numpy or torch."""
    size = 2 * radius + 1
    if isinstance(x, np.ndarray):
        return cv2.blur(x[0, 0].astype(np.float32), (size, size), borderType=cv2.BORDER_REPLICATE)[None, None]
    import torch.nn.functional as F

    return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), size, stride=1)


def _concatenate(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)
