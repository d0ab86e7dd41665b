"""The one backend protocol, a recurrent SPGM's state tensors, and batch splitting for bounded batch axes."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from spgim.errors import SpgimError

if TYPE_CHECKING:
    import torch

# SPD's outputs, in the order SPGM takes them after the image (the exported graphs' names).
SPD_OUTPUTS = ("mask", "r2", "r3", "r4")
# Their output strides: each one's height and width are the image's divided by this.
SPD_OUTPUT_STRIDES = {"mask": 4, "r2": 4, "r3": 8, "r4": 16}
# A recurrent SPGM's state inputs are named state_<level>; the output carrying one to the next frame, next_<its name>.
STATE_PREFIX = "state_"
NEXT_STATE_PREFIX = "next_"


@dataclass(frozen=True)
class StateTensor:
    """One state tensor of a recurrent SPGM, as its sidecar records it.

    Attributes:
        name: the graph input (``state_os16``).
        output: the graph output with the next frame's value (``next_state_os16``).
        channels: its channels.
        stride: its height and width are the image's divided by this.
    """

    name: str
    output: str
    channels: int
    stride: int

    def shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Its shape beside an image of ``batch`` x 3 x ``height`` x ``width``."""
        return (batch, self.channels, height // self.stride, width // self.stride)


def recurrent_state(sidecar: dict[str, Any]) -> tuple[StateTensor, ...]:
    """The state tensors an SPGM artifact takes and gives, in order, from its sidecar; () for a stateless SPGM.

    Raises:
        SpgimError: a state input without its ``next_`` output, or a shape that is not
            ``["batch", channels, "height/s", "width/s"]`` (one line naming the tensor).
    """
    artifact = sidecar.get("artifact", "the SPGM artifact")
    outputs = {item.get("name") for item in sidecar.get("outputs", [])}
    tensors = []
    for item in sidecar.get("inputs", []):
        name = str(item.get("name"))
        if not name.startswith(STATE_PREFIX):
            continue
        shape = item.get("shape")
        found = re.fullmatch(r"height/(\d+)", shape[2]) if isinstance(shape, list) and len(shape) == 4 else None
        channels = shape[1] if found is not None and isinstance(shape, list) else None
        if found is None or not isinstance(channels, int) or isinstance(channels, bool):
            raise SpgimError(f"{artifact}'s state input {name} has shape {shape}, not [batch, C, height/s, width/s]")
        if NEXT_STATE_PREFIX + name not in outputs:
            raise SpgimError(f"{artifact} takes the state {name} but gives no {NEXT_STATE_PREFIX + name}: export again")
        tensors.append(StateTensor(name, NEXT_STATE_PREFIX + name, channels, int(found.group(1))))
    return tuple(tensors)


def check_state(tensors: Sequence[StateTensor], state: Sequence[Any], image_shape: Sequence[int], what: str) -> None:
    """Refuse, in one line, a state that does not fit ``tensors`` beside an image of ``image_shape``.

    An empty ``state`` always fits (a stream's first frame: zeros).
    """
    if not state:
        return
    if len(state) != len(tensors):
        names = ", ".join(t.name for t in tensors) or "none"
        raise SpgimError(f"{what} takes {len(tensors)} state tensors ({names}), got {len(state)}")
    batch, _, height, width = (int(side) for side in image_shape)
    for tensor, value in zip(tensors, state, strict=True):
        expected = tensor.shape(batch, height, width)
        found = tuple(int(side) for side in value.shape)
        if found != expected:
            raise SpgimError(
                f"{what}: state tensor {tensor.name} is {found}, expected {expected} for a {width}x{height} image "
                "(reset the stream's state when its size changes)"
            )


def state_or_zeros(
    tensors: Sequence[StateTensor],
    state: Sequence[Any] | None,
    image_shape: Sequence[int],
    what: str,
    zeros: Callable[[tuple[int, int, int, int]], Any],
) -> tuple[Any, ...]:
    """``state`` checked against ``tensors`` (:func:`check_state`), or, where it is empty or None (a stream's
    first frame), one ``zeros(shape)`` per state tensor beside an image of ``image_shape``."""
    given = tuple(state or ())
    check_state(tensors, given, image_shape, what)
    if given:
        return given
    batch, _, height, width = (int(side) for side in image_shape)
    return tuple(zeros(tensor.shape(batch, height, width)) for tensor in tensors)


class Backend(Protocol):
    """SPD -> SPGM on one engine: ``infer(image) -> alpha`` on float32 NCHW host arrays in [0, 1].

    ``name`` says which engine and precision; ``device`` is ``"cpu"`` or ``"cuda:N"``. The branches also
    run one at a time (:meth:`run_spd`, :meth:`run_spgm`), so a stream can run SPD on keyframes only
    (:mod:`spgim.runtime.keyframes`): on ``"cpu"`` they take and give numpy arrays, on a GPU torch tensors
    on :attr:`device`. SPD's outputs are the backend's own (its dtype, its device); SPGM also takes a
    float32 mask made by the caller in their place.

    A recurrent SPGM (:attr:`state_tensors` not empty, read from its sidecar) also takes and gives its state:
    the caller keeps it between the frames of a stream (the keyframe scheduler does). :meth:`infer` starts
    every call from zeros.
    """

    name: str
    device: str
    state_tensors: tuple[StateTensor, ...]

    def infer(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``(N, 1, H, W)`` float32 for an image ``(N, 3, H, W)`` float32 in [0, 1]."""
        ...

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """SPD's ``(mask, r2, r3, r4)`` for an image ``(N, 3, H, W)`` float32 in [0, 1]."""
        ...

    def run_spgm(self, image: Any, features: Sequence[Any], state: Sequence[Any] | None = None) -> Any:
        """Alpha ``(N, 1, H, W)`` float32 for an image and SPD's outputs (or a mask in place of SPD's).

        Args:
            state: None: the alpha alone is returned (a recurrent SPGM runs from zeros). A sequence: the
                previous frame's state tensors (:attr:`state_tensors`' order and shapes; empty means zeros,
                a stream's first frame), and ``(alpha, new_state)`` is returned, ``new_state`` a tuple
                (empty for a stateless SPGM). A state that does not fit is refused in one line.
        """
        ...


@runtime_checkable
class DeviceBackend(Protocol):
    """A backend that also takes and gives torch tensors on its device (no host round-trip)."""

    name: str
    device: str
    state_tensors: tuple[StateTensor, ...]

    def infer(self, image: np.ndarray) -> np.ndarray:
        """As :meth:`Backend.infer`."""
        ...

    def infer_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """Alpha ``(N, 1, H, W)`` float32 on ``device`` for an image ``(N, 3, H, W)`` float32 on ``device``."""
        ...

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """As :meth:`Backend.run_spd`."""
        ...

    def run_spgm(self, image: Any, features: Sequence[Any], state: Sequence[Any] | None = None) -> Any:
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
