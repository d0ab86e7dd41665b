"""The one backend protocol, and batch splitting for graphs or engines with a bounded batch axis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from spgim.errors import SpgimError

if TYPE_CHECKING:
    import torch


class Backend(Protocol):
    """SPD -> SPGM on one engine: ``infer(image) -> alpha`` on float32 NCHW host arrays in [0, 1].

    ``name`` says which engine and precision; ``device`` is ``"cpu"`` or ``"cuda:N"``.
    """

    name: str
    device: str

    def infer(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``(N, 1, H, W)`` float32 for an image ``(N, 3, H, W)`` float32 in [0, 1]."""
        ...


@runtime_checkable
class DeviceBackend(Protocol):
    """A backend that also takes and gives torch tensors on its device (no host round-trip)."""

    name: str
    device: str

    def infer(self, image: np.ndarray) -> np.ndarray:
        """As :meth:`Backend.infer`."""
        ...

    def infer_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """Alpha ``(N, 1, H, W)`` float32 on ``device`` for an image ``(N, 3, H, W)`` float32 on ``device``."""
        ...


def batch_slices(total: int, largest: int | None) -> list[slice]:
    """Slices of at most ``largest`` frames covering ``total`` (one slice when the batch axis is unbounded)."""
    if largest is None or total <= largest:
        return [slice(0, total)]
    return [slice(start, min(start + largest, total)) for start in range(0, total, largest)]


def fixed_batch(shape: list[int | str | None]) -> int | None:
    """The batch size of an ONNX input shape when it is a fixed number, else None."""
    first = shape[0] if shape else None
    return first if isinstance(first, int) and first > 0 else None


def check_fixed_batch(total: int, fixed: int | None, what: str) -> None:
    """Refuse a batch a fixed-batch graph cannot be fed in whole chunks."""
    if fixed is not None and total % fixed:
        raise SpgimError(f"{what} takes batches of exactly {fixed} frames; {total} frames cannot be split into them")
