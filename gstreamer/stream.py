"""One element's matting: the open model, frame by frame, as the streaming pipeline drives it.

:class:`MatteStream` opens the export as ``spgim matte`` does (:func:`spgim.streaming.options.open_local_matter`),
then mattes one RGB frame per call in stream order with the model's keyframe scheduler, and makes the asked
output with the streaming stage's own compositing (:mod:`spgim.streaming.composite`). A recurrent model's state
starts again after a gap in the frames' timestamps (:func:`spgim.streaming.pipeline.timestamp_gap`), as in a
matting job. The element calls :meth:`MatteStream.reset` where its stream is not continuous: new caps, a flush,
a buffer marked as a discontinuity. Nothing here needs GStreamer, so it runs in the project's own interpreter too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np

from spgim.errors import SpgimError
from spgim.runtime.artifacts import check_size
from spgim.sizes import working_size
from spgim.streaming.composite import Background, alpha_u8, composite, composite_on_device, rgba
from spgim.streaming.options import open_local_matter
from spgim.streaming.pipeline import timestamp_gap

from .properties import BLUR, ElementSettings

BLUR_SCALE = 8  # the blurred background is made at 1/8 of the frame's size, then scaled back up
BLUR_SIGMA = 4.0  # its Gaussian sigma at that size, in pixels: a strong, cheap blur


@dataclass(frozen=True)
class MattedFrame:
    """What one frame gave.

    Attributes:
        image: the output: uint8 ``(H, W)`` alpha, ``(H, W, 4)`` RGBA or ``(H, W, 3)`` RGB composite.
        index: the frame's number since the element started (from 0).
        keyframe: whether SPD ran on it.
        latency_s: seconds from the frame given to its output made.
    """

    image: np.ndarray
    index: int
    keyframe: bool
    latency_s: float


def blurred(rgb: np.ndarray) -> np.ndarray:
    """The frame heavily blurred, as a background behind its own subject: made small, blurred, scaled back."""
    height, width = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, width // BLUR_SCALE), max(1, height // BLUR_SCALE)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


class MatteStream:
    """An export open for one element, matting its frames in order into ``settings.output``.

    Args:
        settings: what the element's properties asked for.

    Attributes:
        matter: the open :class:`~spgim.runtime.matting.Matter` (its ``backend_name``, ``work_size``,
            ``keyframe_interval`` and ``selection`` say what runs).
        frames: frames matted since the element started.
    """

    def __init__(self, settings: ElementSettings) -> None:
        self.settings = settings
        self.matter = open_local_matter(settings.model, settings.engine, settings.matting)
        self.scheduler = self.matter.scheduler
        self.background: Background | None = None
        self.frames = 0
        self.since_reset = 0  # frames matted since the keyframe state was last fresh
        self.last_time: float | None = None  # the last matted frame's time, for a recurrent model's gaps
        self.rate: Fraction | None = None

    def configure(self, width: int, height: int, rate: Fraction | None) -> None:
        """Take frames of ``width`` x ``height`` at ``rate`` (None: unknown) from now on.

        Raises:
            SpgimError: the size's working size is outside what the export takes, or the background cannot be read.
        """
        work_h, work_w = working_size(height, width, self.matter.work_size)
        try:
            check_size(self.matter.spgm_artifact, work_h, work_w)
        except SpgimError as error:
            raise SpgimError(f"frame size {width}x{height} is out of the export's range: {error}") from None
        self.close()
        self.rate = rate
        if self.settings.output == "composite" and self.settings.background != BLUR:
            self.background = Background(self.settings.background, width, height)

    def reset(self) -> bool:
        """Forget the keyframe state (and a recurrent model's state): the next frame is a keyframe. Returns whether
        there was anything to forget (a frame matted since the last reset)."""
        forgot = self.since_reset > 0
        self.scheduler.reset()
        self.since_reset = 0
        self.last_time = None
        return forgot

    def matte(self, rgb: np.ndarray, seconds: float | None) -> MattedFrame:
        """The output for the next frame of the stream: ``rgb`` uint8 ``(H, W, 3)`` at ``seconds`` (None: untimed)."""
        started = time.perf_counter()
        if self.scheduler.recurrent and timestamp_gap(self.last_time, seconds, self.rate):
            self.scheduler.reset_state("gap")
        keyframes = len(self.scheduler.stats.keyframes)
        alpha = self.matter(rgb)
        keyframe = len(self.scheduler.stats.keyframes) > keyframes
        image = self._output(rgb, alpha)
        index = self.frames
        self.frames += 1
        self.since_reset += 1
        self.last_time = seconds if seconds is not None else self.last_time
        return MattedFrame(image, index, keyframe, time.perf_counter() - started)

    def _output(self, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        output = self.settings.output
        if output == "alpha":
            return alpha_u8(alpha)
        if output == "rgba":
            return rgba(rgb, alpha_u8(alpha))
        back = blurred(rgb) if self.background is None else self.background.next()
        if self.matter.device.startswith("cuda"):
            return composite_on_device(rgb, alpha, back, self.matter.device)
        return composite(rgb, alpha, back)

    def close(self) -> None:
        """Release a background video."""
        if self.background is not None:
            self.background.close()
            self.background = None
