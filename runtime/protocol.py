"""The one backend protocol, and batch splitting for graphs or engines with a bounded batch axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from spgim.errors import SpgimError

if TYPE_CHECKING:
    import torch

# SPD's outputs, in the order SPGM takes them after the image (the exported graphs' names).
SPD_OUTPUTS = ("mask", "r2", "r3", "r4")
# Their output strides: each one's height and width are the image's divided by this.
SPD_OUTPUT_STRIDES = {"mask": 4, "r2": 4, "r3": 8, "r4": 16}


class Backend(Protocol):
    """SPD -> SPGM on one engine: ``infer(image) -> alpha`` on float32 NCHW host arrays in [0, 1].

    ``name`` says which engine and precision; ``device`` is ``"cpu"`` or ``"cuda:N"``. The branches also
    run one at a time (:meth:`run_spd`, :meth:`run_spgm`), so a stream can run SPD on keyframes only
    (:mod:`spgim.runtime.keyframes`): on ``"cpu"`` they take and give numpy arrays, on a GPU torch tensors
    on :attr:`device`. SPD's outputs are the backend's own (its dtype, its device); SPGM also takes a
    float32 mask made by the caller in their place.
    """

    name: str
    device: str

    def infer(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``(N, 1, H, W)`` float32 for an image ``(N, 3, H, W)`` float32 in [0, 1]."""
        ...

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """SPD's ``(mask, r2, r3, r4)`` for an image ``(N, 3, H, W)`` float32 in [0, 1]."""
        ...

    def run_spgm(self, image: Any, features: Sequence[Any]) -> Any:
        """Alpha ``(N, 1, H, W)`` float32 for an image and SPD's outputs (or a mask in place of SPD's)."""
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

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """As :meth:`Backend.run_spd`."""
        ...

    def run_spgm(self, image: Any, features: Sequence[Any]) -> Any:
        """As :meth:`Backend.run_spgm`."""
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
