"""The one parser of sizes given on command lines: ``"WxH"`` (or ``"S"`` for a square)."""

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
