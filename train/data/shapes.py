"""Foreground objects of the scene generator: shapes, their exact alpha and their colours.

Alpha is drawn on a supersampled canvas and area-averaged down, so edges are anti-aliased and
strands thinner than a pixel end up as fractional alpha. Colours are a field over the whole
image, so a foreground has plausible colours outside its alpha support too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]
Points = NDArray[np.float64]

SHAPES = (
    "disc",
    "square",
    "triangle",
    "star",
    "ring",
    "frame",
    "crescent",
    "blob",
    "bubble",
    "hairy ball",
    "feather",
)
# Caption order of the adjectives: "a translucent striped red star".
ATTRIBUTES = ("translucent", "fuzzy", "blurry", "perforated", "striped", "spotted")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.95, 0.55, 0.10),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.65, 0.20),
    "cyan": (0.10, 0.75, 0.80),
    "blue": (0.15, 0.30, 0.85),
    "purple": (0.55, 0.20, 0.70),
    "pink": (0.95, 0.50, 0.70),
    "white": (0.93, 0.93, 0.93),
    "black": (0.08, 0.08, 0.08),
    "brown": (0.50, 0.30, 0.12),
    "grey": (0.50, 0.50, 0.50),
}

_HAIRY = frozenset({"hairy ball", "feather"})
_SOLID = frozenset({"disc", "square", "triangle", "star", "blob"})
_ATTRIBUTE_ODDS = {
    "translucent": 0.25,
    "fuzzy": 0.2,
    "blurry": 0.2,
    "perforated": 0.25,
    "striped": 0.2,
    "spotted": 0.15,
}


@dataclass(frozen=True)
class ObjectSpec:
    """One foreground object: what it is and where it sits, in output pixels."""

    shape: str
    colour: str
    attributes: tuple[str, ...]
    cx: float
    cy: float
    radius: float
    angle: float
    z: int

    def noun(self) -> str:
        """Colour and shape, e.g. ``"blue disc"``."""
        return f"{self.colour} {self.shape}"

    def phrase(self) -> str:
        """Attributes, colour and shape, e.g. ``"translucent striped blue disc"``."""
        return " ".join((*self.attributes, self.noun()))


def sample_attributes(shape: str, rng: np.random.Generator) -> tuple[str, ...]:
    """Up to two attributes that make sense for ``shape``, in caption order."""
    allowed = [name for name in ATTRIBUTES if _allowed(shape, name)]
    picked = [name for name in allowed if rng.random() < _ATTRIBUTE_ODDS[name]]
    if "striped" in picked and "spotted" in picked:
        picked.remove("spotted")
    if len(picked) > 2:
        keep = set(rng.choice(len(picked), size=2, replace=False).tolist())
        picked = [name for i, name in enumerate(picked) if i in keep]
    return tuple(picked)


def _allowed(shape: str, attribute: str) -> bool:
    if attribute == "perforated":
        return shape in _SOLID
    if attribute in ("fuzzy", "blurry"):
        return shape not in _HAIRY and shape != "bubble"
    if attribute == "translucent":
        return shape != "bubble"
    return True


def supersampling(size: int) -> int:
    """Supersampling factor of the alpha canvas: 4 up to 512 px, 2 above, to bound memory."""
    return 4 if size <= 512 else 2


def render_alpha(spec: ObjectSpec, size: int, rng: np.random.Generator) -> F32:
    """The object's alpha in ``[0, 1]``, ``(size, size)`` float32."""
    ss = supersampling(size)
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    _DRAW[spec.shape](canvas, spec, rng, ss)
    if "perforated" in spec.attributes:
        _perforate(canvas, spec, rng, ss)
    if "fuzzy" in spec.attributes:
        _fringe(canvas, spec, rng, ss)
    alpha = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if "blurry" in spec.attributes:
        sigma = float(rng.uniform(0.008, 0.02) * size)
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), sigma), np.float32)
    if "translucent" in spec.attributes:
        alpha *= np.float32(rng.uniform(0.3, 0.7))
    return np.clip(alpha, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=4)
def pixel_grid(size: int) -> tuple[F32, F32]:
    """x and y coordinates of the pixel centres of a ``size`` x ``size`` image."""
    centres = np.arange(size, dtype=np.float32) + np.float32(0.5)
    xs, ys = np.meshgrid(centres, centres)
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def render_colour(spec: ObjectSpec, size: int, rng: np.random.Generator) -> F32:
    """The object's straight RGB colour in ``[0, 1]`` over the whole image, ``(size, size, 3)``."""
    xs, ys = pixel_grid(size)
    base = np.clip(np.asarray(COLOURS[spec.colour]) + rng.uniform(-0.05, 0.05, 3), 0.0, 1.0)
    light = rng.uniform(0.0, 2 * np.pi)
    along = ((xs - spec.cx) * np.cos(light) + (ys - spec.cy) * np.sin(light)) / spec.radius
    shade = 1.0 + rng.uniform(0.08, 0.2) * np.clip(along, -1.5, 1.5)
    colour = shade[..., None] * base.astype(np.float32)
    second = _contrast_colour(base).astype(np.float32)
    if "striped" in spec.attributes:
        mix = _stripe_mask(spec, xs, ys, rng)
        colour = colour * (1.0 - mix[..., None]) + second * mix[..., None]
    if "spotted" in spec.attributes:
        mix = _spot_mask(spec, size, rng)
        colour = colour * (1.0 - mix[..., None]) + second * mix[..., None]
    return np.clip(colour, 0.0, 1.0).astype(np.float32)


def _contrast_colour(base: NDArray[np.float64]) -> NDArray[np.float64]:
    """A darker or lighter version of the same hue, so the colour name stays true."""
    luminance = float(base @ np.array([0.299, 0.587, 0.114]))
    return base * 0.4 if luminance > 0.5 else base * 0.5 + 0.45


def _stripe_mask(spec: ObjectSpec, xs: F32, ys: F32, rng: np.random.Generator) -> F32:
    direction = rng.uniform(0.0, np.pi)
    period = spec.radius * rng.uniform(0.25, 0.5)
    along = (xs - spec.cx) * np.cos(direction) + (ys - spec.cy) * np.sin(direction)
    wave = np.sin(2 * np.pi * along / period + rng.uniform(0.0, 2 * np.pi))
    return np.clip(wave * 3.0 + 0.5, 0.0, 1.0).astype(np.float32)


def _spot_mask(spec: ObjectSpec, size: int, rng: np.random.Generator) -> F32:
    mask = np.zeros((size, size), np.uint8)
    count = int(rng.integers(8, 20))
    angles = rng.uniform(0.0, 2 * np.pi, count)
    dists = spec.radius * np.sqrt(rng.uniform(0.0, 1.0, count))
    radii = spec.radius * rng.uniform(0.06, 0.14, count)
    for angle, dist, radius in zip(angles, dists, radii, strict=True):
        centre = (round(spec.cx + dist * np.cos(angle)), round(spec.cy + dist * np.sin(angle)))
        cv2.circle(mask, centre, max(1, round(radius)), 255, -1, cv2.LINE_AA)
    return mask.astype(np.float32) / 255.0


# --- rasterisers: each draws one shape in 0..255 on the supersampled canvas --------------------


def _to_canvas(points: Points, ss: int) -> NDArray[np.int32]:
    """Output-pixel coordinates to integer canvas coordinates (pixel centres at integers)."""
    return np.rint(points * ss - 0.5).astype(np.int32)


def _fill(canvas: U8, points: Points, ss: int, value: int = 255) -> None:
    cv2.fillPoly(canvas, [_to_canvas(points, ss)], value, cv2.LINE_AA)


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 128) -> Points:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _polygon(spec: ObjectSpec, radii: NDArray[np.float64]) -> Points:
    """A star-shaped polygon around the centre with one radius per vertex."""
    t = spec.angle + np.linspace(0.0, 2 * np.pi, len(radii), endpoint=False)
    return np.stack([spec.cx + radii * np.cos(t), spec.cy + radii * np.sin(t)], axis=1)


def _disc(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    r = spec.radius
    _fill(canvas, _ellipse(spec.cx, spec.cy, r, r * rng.uniform(0.75, 1.0), spec.angle), ss)


def _square(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    _fill(canvas, _polygon(spec, np.full(4, spec.radius)), ss)


def _triangle(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    _fill(canvas, _polygon(spec, spec.radius * rng.uniform(0.9, 1.1, 3)), ss)


def _star(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    points = int(rng.integers(5, 8))
    inner = rng.uniform(0.4, 0.55)
    radii = np.tile([spec.radius, spec.radius * inner], points)
    _fill(canvas, _polygon(spec, radii), ss)


def _ring(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    r, aspect = spec.radius, rng.uniform(0.8, 1.0)
    hole = rng.uniform(0.4, 0.65)
    _fill(canvas, _ellipse(spec.cx, spec.cy, r, r * aspect, spec.angle), ss)
    _fill(canvas, _ellipse(spec.cx, spec.cy, r * hole, r * hole * aspect, spec.angle), ss, 0)


def _frame(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    _fill(canvas, _polygon(spec, np.full(4, spec.radius)), ss)
    _fill(canvas, _polygon(spec, np.full(4, spec.radius * rng.uniform(0.45, 0.65))), ss, 0)


def _crescent(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    r = spec.radius
    _fill(canvas, _ellipse(spec.cx, spec.cy, r, r, 0.0), ss)
    shift = r * rng.uniform(0.35, 0.6)
    cx, cy = spec.cx + shift * np.cos(spec.angle), spec.cy + shift * np.sin(spec.angle)
    cut = r * rng.uniform(0.8, 0.95)
    _fill(canvas, _ellipse(cx, cy, cut, cut, 0.0), ss, 0)


def _blob(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    t = np.linspace(0.0, 2 * np.pi, 160, endpoint=False)
    wobble = np.zeros_like(t)
    for k in range(2, 6):
        wobble += rng.uniform(0.0, 0.25 / k) * np.cos(k * t + rng.uniform(0.0, 2 * np.pi))
    _fill(canvas, _polygon(spec, spec.radius * (0.8 + wobble)), ss)


def _bubble(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    """A see-through body (alpha 0.25-0.45) with an opaque rim and a bright highlight."""
    r = spec.radius
    outline = _ellipse(spec.cx, spec.cy, r, r, 0.0)
    _fill(canvas, outline, ss, int(rng.integers(64, 116)))
    rim = max(1, round(r * rng.uniform(0.05, 0.1) * ss))
    cv2.polylines(canvas, [_to_canvas(outline, ss)], True, 255, rim, cv2.LINE_AA)
    hx, hy = spec.cx - 0.4 * r, spec.cy - 0.4 * r
    _fill(canvas, _ellipse(hx, hy, 0.18 * r, 0.1 * r, -np.pi / 4), ss, 230)


def _strands(
    canvas: U8,
    base: Points,
    direction: NDArray[np.float64],
    length: NDArray[np.float64],
    bend: NDArray[np.float64],
    ss: int,
) -> None:
    """Thin anti-aliased curves, one canvas pixel wide: sub-pixel hairs after downsampling."""
    t = np.linspace(0.0, 1.0, 8)[None, :, None]
    along = np.stack([np.cos(direction), np.sin(direction)], axis=1)[:, None, :]
    across = np.stack([-np.sin(direction), np.cos(direction)], axis=1)[:, None, :]
    scale = length[:, None, None]
    curves = base[:, None, :] + along * scale * t + across * (bend[:, None, None] * scale) * t**2
    cv2.polylines(canvas, list(_to_canvas(curves, ss)), False, 255, 1, cv2.LINE_AA)


def _hairy_ball(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    core = spec.radius * rng.uniform(0.45, 0.6)
    _fill(canvas, _ellipse(spec.cx, spec.cy, core, core, 0.0), ss)
    count = int(rng.integers(300, 600))
    theta = rng.uniform(0.0, 2 * np.pi, count)
    start = core * rng.uniform(0.6, 1.0, count)
    base = np.stack([spec.cx + start * np.cos(theta), spec.cy + start * np.sin(theta)], axis=1)
    length = (spec.radius - start) * rng.uniform(0.8, 1.2, count)
    _strands(canvas, base, theta + rng.normal(0.0, 0.25, count), length, rng.normal(0.0, 0.3, count), ss)


def _feather(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    """A curved shaft with two vanes of thin barbs that sweep towards the tip."""
    r, count = spec.radius, int(rng.integers(120, 200))
    t = np.linspace(-1.0, 1.0, 32)
    curl = rng.uniform(-0.15, 0.15)
    c, s = np.cos(spec.angle), np.sin(spec.angle)
    x, y = 0.9 * r * t, curl * r * (t**2 - 1.0)
    shaft = np.stack([spec.cx + c * x - s * y, spec.cy + s * x + c * y], axis=1)
    width = max(1, round(0.04 * r * ss))
    cv2.polylines(canvas, [_to_canvas(shaft, ss)], False, 255, width, cv2.LINE_AA)
    for side in (-1.0, 1.0):
        u = rng.uniform(-0.7, 1.0, count)
        bx, by = 0.9 * r * u, curl * r * (u**2 - 1.0)
        base = np.stack([spec.cx + c * bx - s * by, spec.cy + s * bx + c * by], axis=1)
        sweep = side * rng.uniform(0.8, 1.1, count)
        length = 0.6 * r * np.sqrt(np.clip(1.0 - ((u - 0.15) / 0.9) ** 2, 0.05, 1.0))
        _strands(canvas, base, spec.angle + sweep, length, rng.normal(0.0, 0.12, count) - 0.15 * side, ss)


def _perforate(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    """Cut small round holes where the shape is solid."""
    for _ in range(int(rng.integers(3, 7))):
        angle, dist = rng.uniform(0.0, 2 * np.pi), spec.radius * rng.uniform(0.0, 0.5)
        cx, cy = spec.cx + dist * np.cos(angle), spec.cy + dist * np.sin(angle)
        row, col = round(cy * ss), round(cx * ss)
        if 0 <= row < canvas.shape[0] and 0 <= col < canvas.shape[1] and canvas[row, col] == 255:
            hole = spec.radius * rng.uniform(0.06, 0.12)
            _fill(canvas, _ellipse(cx, cy, hole, hole, 0.0, 48), ss, 0)


def _fringe(canvas: U8, spec: ObjectSpec, rng: np.random.Generator, ss: int) -> None:
    """Short hairs along the outer contour, pointing away from the centre."""
    contours, _ = cv2.findContours((canvas > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return
    outline = (np.concatenate(contours).reshape(-1, 2).astype(np.float64) + 0.5) / ss
    count = int(rng.integers(200, 400))
    base = outline[rng.integers(0, len(outline), count)]
    outward = np.arctan2(base[:, 1] - spec.cy, base[:, 0] - spec.cx) + rng.normal(0.0, 0.3, count)
    length = spec.radius * rng.uniform(0.06, 0.18, count)
    start = base - 0.2 * length[:, None] * np.stack([np.cos(outward), np.sin(outward)], axis=1)
    _strands(canvas, start, outward, length, rng.normal(0.0, 0.3, count), ss)


_DRAW: dict[str, Callable[[U8, ObjectSpec, np.random.Generator, int], None]] = {
    "disc": _disc,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "ring": _ring,
    "frame": _frame,
    "crescent": _crescent,
    "blob": _blob,
    "bubble": _bubble,
    "hairy ball": _hairy_ball,
    "feather": _feather,
}
