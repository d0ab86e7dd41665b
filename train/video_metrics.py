"""Video matting evaluation: a predicted alpha video against the true one, frame by frame.

Per frame: SAD, MSE, Grad and Conn exactly as :mod:`.metrics` defines them (whole frame), the mean
absolute error, and IoU of the masks ``alpha >= 0.5``. Between frames: dtSSD as RobustVideoMatting
defines it, sqrt(mean(((a_t - a_{t-1}) - (g_t - g_{t-1}))^2)) * 100 for t >= 1, averaged, and the share of
its squared error that sits where the true alpha moves (|g_t - g_{t-1}| > 1/255): flicker where the picture is
still is a runtime's to fix, error on moving edges only a model that follows the motion can remove.

Frames are compared as they stream from the two inputs, so a long 720p clip never sits in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spgim.errors import SpgimError

from .metrics import evaluate

__all__ = ["VideoScores", "evaluate_alpha_videos", "read_alpha_frames", "score_alpha_arrays"]

FloatArray = npt.NDArray[np.float64]

FRAME_METRICS = ("mae", "iou", "sad", "mse", "grad", "conn")
IOU_THRESHOLD = 0.5
MOVING_THRESHOLD = 1.0 / 255.0  # a true alpha that changes by more than one 8-bit step between frames moves


@dataclass
class VideoScores:
    """Scores of one predicted alpha video against its truth.

    The frame metrics (``mae``, ``iou``, ``sad``, ``mse``, ``grad``, ``conn``) hold one value per
    frame; ``dtssd`` holds one value per pair of consecutive frames (frame t against t - 1 for
    t = 1..T-1), so it is one shorter, as does ``dtssd_moving_share``, the share of each pair's squared dtSSD error
    where the true alpha moves (0 where the pair has no error). SAD, Grad and Conn are divided by 1000 as in
    :mod:`.metrics`.
    """

    frames: int = 0
    mae: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    sad: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    grad: list[float] = field(default_factory=list)
    conn: list[float] = field(default_factory=list)
    dtssd: list[float] = field(default_factory=list)
    dtssd_moving_share: list[float] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        """The mean of one metric over the video; dtSSD of a one-frame video is 0."""
        values: list[float] = getattr(self, metric)
        return math.fsum(values) / len(values) if values else 0.0

    def means(self) -> dict[str, float]:
        """Every metric's mean, keyed as the per-frame lists."""
        return {metric: self.mean(metric) for metric in (*FRAME_METRICS, "dtssd", "dtssd_moving_share")}

    def summary_line(self) -> str:
        """One line: ``MAE x IoU y dtSSD z SAD ... MSE ... Grad ... Conn ... (N frames)``."""
        m = self.means()
        return (
            f"MAE {m['mae']:.4f} IoU {m['iou']:.4f} dtSSD {m['dtssd']:.3f} SAD {m['sad']:.3f} "
            f"MSE {m['mse']:.5f} Grad {m['grad']:.3f} Conn {m['conn']:.3f} ({self.frames} frames)"
        )

    def to_json(self) -> dict[str, Any]:
        """``{"frames": T, "mean": {...}, "per_frame": {...}}``, ready for :func:`json.dumps`."""
        per_frame = asdict(self)
        del per_frame["frames"]
        return {"frames": self.frames, "mean": self.means(), "per_frame": per_frame}

    def add(self, predicted: FloatArray, truth: FloatArray, previous: tuple[FloatArray, FloatArray] | None) -> None:
        """Score one frame pair; ``previous`` is the pair before it (None for the first frame)."""
        for metric, value in evaluate(predicted, truth).items():
            getattr(self, metric).append(value)
        self.mae.append(float(np.mean(np.abs(predicted - truth))))
        p_mask, t_mask = predicted >= IOU_THRESHOLD, truth >= IOU_THRESHOLD
        union = int(np.count_nonzero(p_mask | t_mask))
        # Two empty masks agree perfectly.
        self.iou.append(int(np.count_nonzero(p_mask & t_mask)) / union if union else 1.0)
        if previous is not None:
            truth_change = truth - previous[1]
            squared = np.square((predicted - previous[0]) - truth_change)
            self.dtssd.append(float(np.sqrt(np.mean(squared)) * 100.0))
            total = float(np.sum(squared))
            moving = float(np.sum(squared[np.abs(truth_change) > MOVING_THRESHOLD]))
            self.dtssd_moving_share.append(moving / total if total > 0 else 0.0)
        self.frames += 1


def _size(frame: FloatArray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


def _score(predicted: Iterable[FloatArray], truth: Iterable[FloatArray], names: tuple[str, str]) -> VideoScores:
    scores = VideoScores()
    previous: tuple[FloatArray, FloatArray] | None = None
    counts = [0, 0]
    for index, (p, t) in enumerate(zip_longest(predicted, truth)):
        counts[0] += p is not None
        counts[1] += t is not None
        if p is None or t is None:
            # Keep counting the longer one so that the message names both frame counts.
            continue
        if p.shape != t.shape:
            raise SpgimError(f"frame {index} sizes differ: {names[0]} is {_size(p)}, {names[1]} is {_size(t)}")
        scores.add(p, t, previous)
        previous = (p, t)
    if counts[0] != counts[1]:
        raise SpgimError(f"frame counts differ: {names[0]} has {counts[0]}, {names[1]} has {counts[1]}")
    if counts[0] == 0:
        raise SpgimError(f"{names[0]} and {names[1]} hold no frames")
    return scores


def score_alpha_arrays(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> VideoScores:
    """Score a predicted alpha video against the truth, both in memory.

    Args:
        predicted: float array ``(T, H, W)`` with values in [0, 1].
        truth: float array ``(T, H, W)`` with values in [0, 1].

    Returns:
        Per-frame and mean scores.

    Raises:
        SpgimError: not 3-D, frame counts or sizes differ, values outside [0, 1], or no frames.
    """
    arrays = []
    for name, value in (("predicted", predicted), ("truth", truth)):
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 3:
            raise SpgimError(f"the {name} alpha must be (T, H, W), got shape {arr.shape}")
        if not np.all((arr >= 0.0) & (arr <= 1.0)):
            raise SpgimError(f"the {name} alpha has values outside [0, 1] (or NaN)")
        arrays.append(arr)
    return _score(iter(arrays[0]), iter(arrays[1]), ("the prediction", "the truth"))


def read_alpha_frames(path: str | Path) -> Iterator[FloatArray]:
    """Decode an alpha video (whole frame, greyscale) or a folder of PNGs into float frames in [0, 1].

    Args:
        path: a video file PyAV can decode, or a folder of ``*.png`` files (read in name order).

    Yields:
        ``(H, W)`` float64 alphas; high-bit-depth sources keep their precision.

    Raises:
        SpgimError: the path is missing, holds no video or PNG, or cannot be decoded.
    """
    source = Path(path)
    if not source.exists():
        raise SpgimError(f"{source}: no such file or folder")
    if source.is_dir():
        yield from _read_pngs(source)
    else:
        yield from _read_video(source)


def _read_pngs(folder: Path) -> Iterator[FloatArray]:
    import cv2

    files = sorted(folder.glob("*.png"))
    if not files:
        raise SpgimError(f"{folder}: a folder of alpha PNGs was expected, but it holds none")
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SpgimError(f"cannot read {file} as a PNG")
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
        scale = 65535.0 if image.dtype == np.uint16 else 255.0
        yield image.astype(np.float64) / scale


def _read_video(file: Path) -> Iterator[FloatArray]:
    import av

    try:
        # The file may come from elsewhere: tags that are not UTF-8 must not stop the decode.
        with av.open(str(file), metadata_errors="replace") as container:
            if not container.streams.video:
                raise SpgimError(f"{file}: holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.format.components[0].bits > 8:
                    yield frame.to_ndarray(format="gray16le").astype(np.float64) / 65535.0
                else:
                    yield frame.to_ndarray(format="gray").astype(np.float64) / 255.0
    except av.error.FFmpegError as error:
        raise SpgimError(f"cannot decode {file}: {error}") from None


def evaluate_alpha_videos(predicted: str | Path, truth: str | Path) -> VideoScores:
    """Score a predicted alpha video (or PNG folder) against the true one, frame by frame.

    Args:
        predicted: the predicted alpha: a greyscale video (lossless for a fair score) or a PNG folder.
        truth: the true alpha, e.g. the FFV1 ``.mkv`` of ``spgim data clip --alpha``.

    Returns:
        Per-frame and mean scores.

    Raises:
        SpgimError: a file is missing or undecodable, or the frame counts or sizes differ.
    """
    names = (f"prediction {Path(predicted).name}", f"truth {Path(truth).name}")
    return _score(read_alpha_frames(predicted), read_alpha_frames(truth), names)
