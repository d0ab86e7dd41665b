"""The one parser of sizes given on command lines (``"WxH"``, or ``"S"`` for a square), and a frame's working size."""

from __future__ import annotations

from .errors import SpgimError


def parse_size(text: str, *, multiple: int = 32) -> tuple[int, int]:
    """``"WxH"`` or ``"S"`` -> ``(height, width)``, both positive multiples of ``multiple``.

    Model inputs need multiples of 32 (the encoders' stride), the default; video frames take any size
    (``multiple=1``). Anything else is one :class:`SpgimError` line.
    """
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise SpgimError(f"size {text!r} is not WxH, e.g. 512x512") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0 or any(v % multiple for v in values):
        which = f"positive multiples of {multiple}" if multiple > 1 else "positive"
        raise SpgimError(f"size {text!r} must be WxH with both sides {which}")
    width, height = values
    return height, width


def working_size(height: int, width: int, work_size: int) -> tuple[int, int]:
    """The size (height, width) a ``height`` x ``width`` frame is matted at: the longer side at most ``work_size``,
    both sides rounded to multiples of 32 (at least 32), the aspect kept; export sizes its profile by it."""
    scale = min(1.0, work_size / max(height, width))
    return max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32)
