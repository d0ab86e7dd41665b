"""Mutations of a file's bytes, the kinds real damage takes: flipped bytes, a cut tail, chunks spliced in,
chunks dropped, a zeroed header. Deterministic for a seed; shared by the pytest corpus and ``make fuzz``'s seeds.
"""

from __future__ import annotations

import numpy as np

KINDS = ("flip", "truncate", "splice", "drop", "zero_header")


def mutate(data: bytes, kind: str, seed: int) -> bytes:
    """``data`` damaged one way (``kind`` of :data:`KINDS`), the same for the same ``seed``."""
    rng = np.random.default_rng(seed)
    size = len(data)
    if size < 16:
        return data[: size // 2]
    if kind == "flip":
        buffer = bytearray(data)
        for position in rng.integers(0, size, max(1, size // 500)):
            buffer[position] ^= int(rng.integers(1, 256))
        return bytes(buffer)
    if kind == "truncate":
        return data[: int(size * rng.uniform(0.05, 0.95))]
    chunk = int(rng.integers(16, max(17, size // 8)))
    start = int(rng.integers(0, size - chunk))
    if kind == "splice":
        at = int(rng.integers(0, size))
        return data[:at] + data[start : start + chunk] + data[at:]
    if kind == "drop":
        return data[:start] + data[start + chunk :]
    if kind == "zero_header":
        cut = min(size, int(rng.integers(8, 512)))
        return bytes(cut) + data[cut:]
    raise ValueError(f"unknown mutation {kind!r}; choose {', '.join(KINDS)}")
