"""Generated clips with their true alpha: objects moving over a panning photo, with a melody.

They serve the demo, ``spgim data clip``, the video evaluation and the tests; training never reads them,
but they are drawn with the training data's generator, so they live beside it.
Each object is rendered once as a sprite (exact alpha and colour from :mod:`.shapes`)
and then moved, turned and scaled frame by frame with one affine warp of both, so the ground-truth
alpha of every frame is known. The background is a photo from :mod:`.backgrounds`,
panned slowly; frames are composited with :func:`.compose.composite` (Eq. 1) and
encoded as H.264 (yuv420p) in MP4 with an AAC track. Everything is drawn from one seed, so a seed gives the same clip.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

from spgim.errors import SpgimError

from .backgrounds import load_photo
from .compose import composite
from .shapes import SHAPES, ObjectSpec, render_alpha, render_colour, sample_attributes

__all__ = ["AUDIO_RATE", "ClipInfo", "render_clip", "render_frames"]

U8 = NDArray[np.uint8]
F32 = NDArray[np.float32]

AUDIO_RATE = 48000
# Colour photos of backgrounds.PHOTOS that read as a scene (not the grey, microscopy or texture ones).
_SCENE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")
# Colours of the sprites; black and grey vanish against dark photos.
_COLOURS = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white")
_PENTATONIC = (0, 2, 4, 7, 9, 12, 14, 16)  # semitones above A3
_MIN_SIDE, _MAX_SIDE = 32, 4096
_PULSE_FRAMES = 48  # period of each object's growing and shrinking
MOTIONS = ("steady", "eased")


@dataclass(frozen=True, eq=False)
class ClipInfo:
    """What :func:`render_clip` wrote.

    ``alpha`` is the ground truth, ``(frames, height, width)`` uint8, frame ``i`` shown at
    ``i / fps`` seconds; ``objects`` names the moving objects back to front.
    """

    path: Path
    frames: int
    size: tuple[int, int]
    fps: Fraction
    seed: int
    photo: str
    objects: tuple[str, ...]
    alpha: U8
    audio_seconds: float
    alpha_path: Path | None = None

    @property
    def duration(self) -> float:
        """Seconds of video."""
        return float(self.frames / self.fps)


@dataclass(frozen=True)
class _Sprite:
    """One object drawn once: straight colour and alpha on a square canvas, and its motion."""

    name: str
    colour: F32
    alpha: F32
    start: tuple[float, float]
    velocity: tuple[float, float]
    spin: float
    scale: tuple[float, float, float]  # base, amplitude, phase


def render_frames(
    frames: int, size: tuple[int, int], seed: int, *, motion: str = "steady"
) -> tuple[list[U8], list[U8], str, tuple[str, ...]]:
    """Composites and alphas of ``frames`` frames of ``size`` = ``(width, height)``.

    Args:
        motion: ``"steady"`` (objects at constant speed, the clips of the demo and the evaluation) or
            ``"eased"`` (each object's clock runs by :func:`eased_clock`: it speeds up and slows down smoothly,
            pauses and turns back, as the sequence training of a recurrent model needs).

    Returns: ``(rgb frames, alpha frames, photo name, object names)``; uint8, ``(H, W, 3)`` and ``(H, W)``.
    """
    if motion not in MOTIONS:
        raise SpgimError(f"unknown motion {motion!r}; choose one of {', '.join(MOTIONS)}")
    width, height = size
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC11B]))
    photo = _SCENE_PHOTOS[int(rng.integers(len(_SCENE_PHOTOS)))]
    pan = _Pan(load_photo(photo), width, height, frames, rng)
    sprites = [_sprite(rng, width, height, frames) for _ in range(int(rng.integers(1, 4)))]
    # The steady clips draw nothing more from rng, so a seed still gives the clip it always gave.
    clocks = [eased_clock(frames, rng) if motion == "eased" else np.arange(frames, dtype=np.float64) for _ in sprites]
    images: list[U8] = []
    alphas: list[U8] = []
    for index in range(frames):
        placed = (_place(sprite, clock[index], width, height) for sprite, clock in zip(sprites, clocks, strict=True))
        colours, coverages = zip(*placed, strict=True)
        fg, alpha = _over(list(colours), list(coverages))
        images.append(composite(fg, pan.frame(index), alpha))
        alphas.append(alpha)
    return images, alphas, photo, tuple(sprite.name for sprite in sprites)


class _Pan:
    """A slow, straight camera pan across a photo scaled to 1.25x the frame."""

    def __init__(self, photo: U8, width: int, height: int, frames: int, rng: np.random.Generator) -> None:
        scale = 1.25 * max(width / photo.shape[1], height / photo.shape[0])
        size = (math.ceil(photo.shape[1] * scale), math.ceil(photo.shape[0] * scale))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        self.image = np.asarray(cv2.resize(photo, size, interpolation=interpolation), np.uint8)
        room = np.array([size[0] - width, size[1] - height], np.float64)
        self.start = rng.uniform(0.0, 1.0, 2) * room
        self.end = rng.uniform(0.0, 1.0, 2) * room
        self.width, self.height, self.frames = width, height, frames

    def frame(self, index: int) -> U8:
        t = index / max(1, self.frames - 1)
        x, y = self.start + (self.end - self.start) * t
        shift = np.array([[1.0, 0.0, -x], [0.0, 1.0, -y]])
        return np.asarray(
            cv2.warpAffine(self.image, shift, (self.width, self.height), flags=cv2.INTER_LINEAR), np.uint8
        )


def _sprite(rng: np.random.Generator, width: int, height: int, frames: int) -> _Sprite:
    """Draw one object on a square canvas big enough for its largest scale, and pick its motion."""
    radius = float(rng.uniform(0.14, 0.24) * min(width, height))
    side = 2 * math.ceil(radius / 0.38)  # the shape reaches ~radius; hairs and blur go a little beyond
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
    spec = ObjectSpec(shape, colour, sample_attributes(shape, rng), side / 2, side / 2, side * 0.38, 0.0, 0)
    alpha = render_alpha(spec, side, rng)
    rgb = render_colour(spec, side, rng)
    margin = radius
    start = (float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin)))
    # Cross about half the frame over the clip, at least 1 px a frame, so every frame differs.
    speed = max(1.0, 0.5 * min(width, height) / max(1, frames))
    angle = float(rng.uniform(0.0, 2 * np.pi))
    velocity = (speed * math.cos(angle), speed * math.sin(angle))
    spin = float(rng.uniform(-3.0, 3.0))
    scale = (float(rng.uniform(0.75, 0.85)), float(rng.uniform(0.08, 0.15)), float(rng.uniform(0.0, 2 * np.pi)))
    return _Sprite(spec.phrase(), rgb, alpha, start, velocity, spin, scale)


def eased_clock(frames: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """An object's own time at each frame: speeds held for 4-12 frames and eased from one to the next.

    The speeds (frames of steady motion per frame) are drawn from a pause (0), slow, normal, fast and
    backwards (-1: the object turns back along its path); a smoothstep eases each change over the first
    half of its segment, so motion starts and stops without a jump, as a hand or a head does.
    """
    speeds = np.empty(frames, np.float64)
    choices = (0.0, 0.5, 1.0, 2.0, -1.0)
    previous, start = 1.0, 0
    while start < frames:
        length = int(rng.integers(4, 13))
        target = choices[int(rng.integers(len(choices)))]
        steps = np.arange(min(length, frames - start), dtype=np.float64)
        ease = np.clip(steps / max(1.0, length / 2), 0.0, 1.0)
        ease = ease * ease * (3 - 2 * ease)
        speeds[start : start + len(steps)] = previous + (target - previous) * ease
        previous, start = target, start + length
    return np.concatenate([[0.0], np.cumsum(speeds[:-1])])


def _bounce(position: float, low: float, high: float) -> float:
    """Fold a straight path back and forth between ``low`` and ``high``."""
    span = high - low
    if span <= 0:
        return low
    offset = (position - low) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


def _place(sprite: _Sprite, index: float, width: int, height: int) -> tuple[F32, F32]:
    """The sprite's colour and alpha at its time ``index`` (in frames of steady motion), warped into the frame."""
    base, amplitude, phase = sprite.scale
    scale = base + amplitude * math.sin(2 * np.pi * index / _PULSE_FRAMES + phase)
    side = sprite.alpha.shape[0]
    reach = 0.5 * side * scale
    cx = _bounce(sprite.start[0] + sprite.velocity[0] * index, reach * 0.5, width - reach * 0.5)
    cy = _bounce(sprite.start[1] + sprite.velocity[1] * index, reach * 0.5, height - reach * 0.5)
    matrix = cv2.getRotationMatrix2D((side / 2, side / 2), sprite.spin * index, scale)
    matrix[:, 2] += (cx - side / 2, cy - side / 2)
    flags = cv2.INTER_LINEAR
    alpha = cv2.warpAffine(sprite.alpha, matrix, (width, height), flags=flags, borderValue=0.0)
    colour = cv2.warpAffine(sprite.colour, matrix, (width, height), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return np.asarray(colour, np.float32), np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)


def _over(colours: list[F32], alphas: list[F32]) -> tuple[U8, U8]:
    """Objects (back to front) merged with 'over' into one straight 8-bit foreground and alpha."""
    premultiplied = np.zeros_like(colours[0])
    coverage = np.zeros_like(alphas[0])
    for colour, alpha in zip(colours, alphas, strict=True):
        premultiplied = colour * alpha[..., None] + premultiplied * (1.0 - alpha[..., None])
        coverage = alpha + coverage * (1.0 - alpha)
    straight = premultiplied / np.maximum(coverage, 1e-6)[..., None]
    fg = np.clip(np.rint(straight * 255.0), 0, 255).astype(np.uint8)
    return fg, np.clip(np.rint(coverage * 255.0), 0, 255).astype(np.uint8)


def melody(seconds: float, seed: int, rate: int = AUDIO_RATE) -> F32:
    """A mono pentatonic tune of plucked notes, four a second, ``(samples,)`` float32 in [-0.5, 0.5]."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA0D10]))
    total = round(seconds * rate)
    wave = np.zeros(total, np.float32)
    note = rate // 4
    for start in range(0, total, note):
        length = min(note, total - start)
        hz = 220.0 * 2 ** (_PENTATONIC[int(rng.integers(len(_PENTATONIC)))] / 12)
        t = np.arange(length) / rate
        envelope = np.minimum(1.0, t / 0.005) * np.exp(-t * 8.0)
        tone = np.sin(2 * np.pi * hz * t) + 0.3 * np.sin(4 * np.pi * hz * t)
        wave[start : start + length] = (0.35 * envelope * tone).astype(np.float32)
    return wave


def render_clip(
    path: str | os.PathLike[str],
    *,
    frames: int = 48,
    size: tuple[int, int] = (320, 192),
    fps: int | Fraction = 24,
    seed: int = 0,
    alpha_path: str | os.PathLike[str] | None = None,
) -> ClipInfo:
    """Render the demo clip: 1-3 objects moving, turning and scaling over a panning photo, with music.

    Args:
        path: output ``.mp4`` (H.264 yuv420p, AAC 48 kHz mono).
        frames: number of video frames, at least 1.
        size: ``(width, height)``, even sides from 32 to 4096.
        fps: frame rate (a whole number or a fraction such as ``Fraction(30000, 1001)``).
        seed: non-negative seed; the same arguments give the same frames and alpha.
        alpha_path: also write the ground-truth alpha as a lossless greyscale FFV1 ``.mkv``.

    Returns: a :class:`ClipInfo` with the ground-truth alpha of every frame.

    Raises:
        SpgimError: for a bad argument or an output that cannot be written.
    """
    import av

    fps = _check(frames, size, fps, seed)
    path = Path(path)
    alpha_out = None if alpha_path is None else Path(alpha_path)
    if alpha_out is not None and alpha_out.suffix.lower() != ".mkv":
        raise SpgimError(f"the alpha clip is lossless FFV1 in Matroska; give a .mkv path, not {alpha_out.name}")
    images, alphas, photo, names = render_frames(frames, size, seed)
    wave = melody(float(frames / fps), seed)
    try:
        _write_video(path, images, fps, wave)
        if alpha_out is not None:
            _write_alpha(alpha_out, alphas, fps)
    except (OSError, av.FFmpegError) as error:
        raise SpgimError(f"cannot write the clip {path}: {error}") from error
    return ClipInfo(
        path=path,
        frames=frames,
        size=size,
        fps=fps,
        seed=seed,
        photo=photo,
        objects=names,
        alpha=np.stack(alphas),
        audio_seconds=len(wave) / AUDIO_RATE,
        alpha_path=alpha_out,
    )


def _check(frames: int, size: tuple[int, int], fps: int | Fraction, seed: int) -> Fraction:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise SpgimError(f"frames must be a whole number >= 1, got {frames!r}")
    width, height = size
    for label, side in (("width", width), ("height", height)):
        if isinstance(side, bool) or not isinstance(side, int) or not _MIN_SIDE <= side <= _MAX_SIDE or side % 2:
            raise SpgimError(f"{label} must be an even number of pixels from {_MIN_SIDE} to {_MAX_SIDE}, got {side!r}")
    if isinstance(fps, bool) or not isinstance(fps, int | Fraction) or not 0 < fps <= 240:
        raise SpgimError(f"fps must be a number above 0 and at most 240, got {fps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpgimError(f"seed must be a whole number >= 0, got {seed!r}")
    return Fraction(fps)


def _write_video(path: Path, images: list[U8], fps: Fraction, wave: F32) -> None:
    import av

    height, width = images[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "medium", "crf": "16"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        written = 0
        for index, image in enumerate(images):
            # Audio up to the end of this frame first, so the two tracks interleave.
            until = min(len(wave), round((index + 1) / fps * AUDIO_RATE))
            for start in range(written, until, 1024):
                chunk = wave[start : min(start + 1024, until)][None, :]
                sound = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
                sound.sample_rate, sound.pts, sound.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
                container.mux(audio.encode(sound))
            written = max(written, until)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, 1 / fps
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        container.mux(audio.encode(None))


def _write_alpha(path: Path, alphas: list[U8], fps: Fraction) -> None:
    import av

    height, width = alphas[0].shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "gray"
        for index, alpha in enumerate(alphas):
            frame = av.VideoFrame.from_ndarray(alpha, format="gray")
            frame.pts, frame.time_base = index, 1 / fps
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
