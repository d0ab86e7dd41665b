"""Training sequences for a recurrent SPGM: short clips from the clip renderer, some joined by a hard cut.

Each sample is drawn from its own seed (``seed_base + index``), far from the seeds of the demo and evaluation
clips (0 to a few hundred), so no evaluation clip is ever trained on. Objects move with eased motion, pauses and
reversals (:func:`.clips.eased_clock`), or, in a chosen share of the samples, at the steady speeds of the demo and
evaluation clips (``spgim data clip``); a share of the samples are two clips joined at a random frame, where a
stream's runtime would see a scene cut and start afresh (the training resets the state there too).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .clips import render_frames

# Far above every seed the demo, the tests and the evaluation clips use.
SEQUENCE_SEED_BASE = 1_000_000


class SequenceDataset(Dataset[dict[str, Tensor]]):
    """``length`` generated sequences of ``frames`` frames of ``size`` = (width, height).

    A sample: ``image`` float32 ``(T, 3, H, W)`` RGB in [0, 1], ``alpha`` float32 ``(T, 1, H, W)``, and ``cut``
    int64: the first frame of the second clip, or 0 where the sample is one clip.

    Args:
        length: samples per epoch.
        frames: frames per sample.
        size: (width, height), multiples of 32.
        seed: the run's seed; sample ``i`` of epoch-independent index ``i`` is drawn from
            ``SEQUENCE_SEED_BASE + seed * length + i``, so two seeds see different clips.
        cut_share: the share of samples that are two clips joined by a hard cut.
        supersample: render at this many times ``size`` and shrink with area averaging, as a stream's frames are
            shrunk to the working size (edges and the true alpha's coverage anti-aliased, not drawn at the size).
        steady_share: the share of samples whose objects move at steady speeds, as in ``spgim data clip``'s clips,
            instead of the eased motion; drawn apart from the rest of a sample, so 0 gives the samples of before.
    """

    def __init__(
        self,
        length: int,
        *,
        frames: int,
        size: tuple[int, int],
        seed: int = 0,
        cut_share: float = 0.25,
        supersample: int = 1,
        steady_share: float = 0.0,
    ) -> None:
        if frames < 2:
            raise ValueError(f"a sequence needs at least 2 frames, got {frames}")
        if size[0] % 32 or size[1] % 32:
            raise ValueError(f"sequence size must be multiples of 32, got {size[0]}x{size[1]}")
        self.length, self.frames, self.size = length, frames, size
        self.seed, self.cut_share = seed, cut_share
        if supersample < 1:
            raise ValueError(f"supersample must be at least 1, got {supersample}")
        self.supersample = supersample
        if not 0.0 <= steady_share <= 1.0:
            raise ValueError(f"steady_share must be within [0, 1], got {steady_share}")
        self.steady_share = steady_share

    def __len__(self) -> int:
        return self.length

    def sample_seed(self, index: int) -> int:
        """The seed sample ``index`` is drawn from."""
        return SEQUENCE_SEED_BASE + self.seed * self.length + index

    def motion_draw(self, index: int) -> float:
        """The uniform draw in [0, 1) that picks sample ``index``'s motion (steady where below ``steady_share``)."""
        return float(np.random.default_rng(np.random.SeedSequence([self.sample_seed(index), 0x57EAD])).random())

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        seed = self.sample_seed(index)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E9]))
        cut = 0
        if rng.random() < self.cut_share:
            cut = int(rng.integers(2, self.frames - 1)) if self.frames > 3 else 1
        motion = "steady" if self.motion_draw(index) < self.steady_share else "eased"
        images, alphas = self._render(self.frames, seed, motion)
        if cut:
            after, after_alphas = self._render(self.frames - cut, seed + 7_919_000, motion)
            images, alphas = np.concatenate([images[:cut], after]), np.concatenate([alphas[:cut], after_alphas])
        image = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        alpha = torch.from_numpy(alphas)[:, None]
        return {"image": image, "alpha": alpha, "cut": torch.tensor(cut, dtype=torch.int64)}

    def _render(self, frames: int, seed: int, motion: str) -> tuple[np.ndarray, np.ndarray]:
        """``frames`` frames of ``motion`` from ``seed``: uint8 RGB ``(T, H, W, 3)``, float32 alpha ``(T, H, W)``."""
        width, height = self.size
        factor = self.supersample
        rendered, coverage, _, _ = render_frames(frames, (width * factor, height * factor), seed, motion=motion)
        images: list[np.ndarray] = list(rendered)
        alphas: list[np.ndarray] = [alpha.astype(np.float32) for alpha in coverage]
        if factor > 1:
            images = [cv2.resize(image, self.size, interpolation=cv2.INTER_AREA) for image in images]
            alphas = [cv2.resize(alpha, self.size, interpolation=cv2.INTER_AREA) for alpha in alphas]
        return np.stack(images), np.stack(alphas) / 255.0

    def describe(self) -> dict[str, Any]:
        """What the sequences are, for the checkpoint."""
        return {
            "frames": self.frames,
            "size": list(self.size),
            "seed": self.seed,
            "cut_share": self.cut_share,
            "supersample": self.supersample,
            "steady_share": self.steady_share,
        }


class SequencesWithScenes(Dataset[dict[str, Tensor]]):
    """Each sequence of ``sequences`` with ``per_sequence`` still composites of ``scenes`` beside it.

    A sequence fine-tune sees a few generated clips, each of a handful of scenes; trained on them alone, a model
    forgets what thousands of varied scenes taught it. Carrying a few composites with every sequence lets the
    stage train on both in each step. A sample is the sequence's (``image``, ``alpha``, ``cut``) plus
    ``scene_image`` ``(per_sequence, 3, S, S)`` and ``scene_alpha`` ``(per_sequence, 1, S, S)``; the composites
    follow the epoch (:meth:`set_epoch`), so every epoch brings other foregrounds.
    """

    def __init__(self, sequences: SequenceDataset, scenes: Dataset[dict[str, Tensor]], per_sequence: int) -> None:
        if per_sequence < 1:
            raise ValueError(f"per_sequence must be at least 1, got {per_sequence}")
        self.sequences, self.scenes, self.per_sequence = sequences, scenes, per_sequence
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sequences)

    def set_epoch(self, epoch: int) -> None:
        """Draw the next epoch's composites (the sequences stay the same)."""
        self.epoch = epoch
        set_epoch = getattr(self.scenes, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sample = dict(self.sequences[index])
        # Drawn from the whole set (its foregrounds may be stored in an order, e.g. single-object scenes first), the
        # same for a given epoch and index in any DataLoader worker.
        rng = np.random.default_rng(np.random.SeedSequence([self.sequences.seed + 1, self.epoch, index, 0x5CE]))
        chosen = rng.integers(0, len(self.scenes), size=self.per_sequence)  # type: ignore[arg-type]
        composites = [self.scenes[int(item)] for item in chosen]
        sample["scene_image"] = torch.stack([item["image"] for item in composites])
        sample["scene_alpha"] = torch.stack([item["alpha"] for item in composites])
        return sample

    def describe(self) -> dict[str, Any]:
        """What the sequences and their composites are, for the checkpoint."""
        return {**self.sequences.describe(), "scenes_per_sequence": self.per_sequence}
