"""One source of truth for the exported graphs' inputs and outputs.

SPD and SPGM are exported as two graphs with the model's explicit signatures, so a runtime can
keep SPD's outputs on the device and bind them straight to SPGM's inputs. The names, shapes
(symbolic in batch, height and width), dtypes, dynamic axes, dummy inputs and TensorRT min/opt/max
profiles all come from here; the exporter, the sidecars and the runtime read the same spec.

A recurrent SPGM (``spgm.recurrent``) has state: its graph takes one tensor per
:attr:`~spgim.train.models.spgm.SPGM.state_names` after SPD's outputs (``state_os16``, ...) and gives the
next frame's after the alpha (``next_state_os16``, ...: ONNX forbids an output sharing an input's name).
They are tensors like the others, at their level's output stride (:func:`recurrent_state`), so every
format, sidecar and TensorRT profile carries them without a case of its own.

A third small graph, ``upsample`` (:class:`spgim.train.models.upsample.GuidedUpsampler`), takes the
working-size alpha and image and the full-resolution frame as the decoder gives it: ``(N, H, W, 3)``
uint8. Its frame-sized tensors are not tied to the working size (``frame=True``: own symbols
``frame_height``/``frame_width``, always dynamic, own TensorRT profile) and have fixed dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Output stride of each tensor: its height and width are the input's divided by this.
SPD_OUTPUT_STRIDES = {"mask": 4, "r2": 4, "r3": 8, "r4": 16}
# The upsample graph's frame sizes, (height, width): min, opt, max (TensorRT profile, pt2 bounds).
FRAME_PROFILE_HW = ((32, 32), (720, 1280), (2160, 3840))
# The output of a recurrent SPGM that carries the state input ``state_os16`` to the next frame: ``next_state_os16``.
NEXT_STATE_PREFIX = "next_"
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "uint8": torch.uint8}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, channels and output stride (height = H / stride).

    Attributes:
        dtype: a fixed dtype (``"uint8"``, ``"float32"``), or None for the graph's precision.
        layout: ``"NCHW"`` or ``"NHWC"`` (the upsample graph's uint8 frame).
        frame: its height and width are the full-resolution frame's, not the working size's
            (stride 1, always dynamic, symbols ``frame_height``/``frame_width``).
    """

    name: str
    channels: int
    stride: int
    dtype: str | None = None
    layout: str = "NCHW"
    frame: bool = False

    def shape(
        self, batch: int, height: int, width: int, frame_hw: tuple[int, int] | None = None
    ) -> tuple[int, int, int, int]:
        """The concrete shape for an input of ``height`` x ``width`` (and a frame of ``frame_hw``, default the same)."""
        if self.frame:
            h, w = frame_hw or (height, width)
        else:
            h, w = height // self.stride, width // self.stride
        if self.layout == "NHWC":
            return (batch, h, w, self.channels)
        return (batch, self.channels, h, w)

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """The (height, width) axes of the layout."""
        return (1, 2) if self.layout == "NHWC" else (2, 3)

    def symbolic_shape(self) -> list[str | int]:
        """Shape with symbolic batch/height/width, as the sidecar records it."""
        if self.frame:
            height, width = "frame_height", "frame_width"
        elif self.stride == 1:
            height, width = "height", "width"
        else:
            height, width = f"height/{self.stride}", f"width/{self.stride}"
        if self.layout == "NHWC":
            return ["batch", height, width, self.channels]
        return ["batch", self.channels, height, width]

    def dtype_name(self, precision_dtype: str) -> str:
        """Its dtype in a graph of ``precision_dtype`` (``"float32"``, ``"float16"``, ...)."""
        return self.dtype or precision_dtype


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one exported branch.

    Attributes:
        working_dynamic: whether :meth:`dynamic_axes` includes batch and the working size (SPD and SPGM
            are exported with them only under ``--dynamic``; the upsample graph's frame axes always are).
    """

    branch: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    working_dynamic: bool = True

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dummy_inputs(
        self,
        height: int,
        width: int,
        batch: int = 1,
        dtype: torch.dtype = torch.float32,
        frame_hw: tuple[int, int] | None = None,
    ) -> tuple:
        """Random tensors of the inputs' shapes, for tracing and parity checks.

        Floating inputs are in [0, 1] (in ``dtype`` unless the spec fixes theirs), uint8 ones in [0, 255];
        frame-sized inputs are ``frame_hw`` (height, width), default the working size.
        """
        generator = torch.Generator().manual_seed(0)
        tensors = []
        for t in self.inputs:
            shape = t.shape(batch, height, width, frame_hw)
            wanted = TORCH_DTYPES[t.dtype] if t.dtype else dtype
            if wanted == torch.uint8:
                tensors.append(torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8))
            else:
                tensors.append(torch.rand(shape, generator=generator, dtype=wanted))
        return tuple(tensors)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes: batch and every tensor's spatial axes; the frame's only, without ``working_dynamic``."""
        axes: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            height, width = t.spatial_axes
            if t.frame:
                batch = {0: "batch"} if self.working_dynamic else {}
                axes[t.name] = {**batch, height: "frame_height", width: "frame_width"}
            elif self.working_dynamic:
                suffix = "" if t.stride == 1 else f"_os{t.stride}"
                axes[t.name] = {0: "batch", height: f"height{suffix}", width: f"width{suffix}"}
        return axes

    def profile(
        self,
        min_hw: tuple[int, int],
        opt_hw: tuple[int, int],
        max_hw: tuple[int, int],
        batch: tuple[int, int, int],
        frame_hw: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = FRAME_PROFILE_HW,
    ) -> dict[str, list[list[int]]]:
        """TensorRT optimisation profile: for each input, its min, opt and max shapes.

        Args:
            frame_hw: min, opt and max (height, width) of frame-sized inputs (the upsample graph's frame).
        """
        working = (min_hw, opt_hw, max_hw)
        return {t.name: [list(t.shape(batch[i], *working[i], frame_hw[i])) for i in range(3)] for t in self.inputs}

    def describe(self, dtype: str) -> dict[str, Any]:
        """Names, symbolic shapes and dtypes of inputs and outputs, for the sidecar."""

        def one(t: TensorSpec) -> dict[str, Any]:
            entry: dict[str, Any] = {"name": t.name, "shape": t.symbolic_shape(), "dtype": t.dtype_name(dtype)}
            if t.layout != "NCHW":
                entry["layout"] = t.layout
            return entry

        return {"inputs": [one(t) for t in self.inputs], "outputs": [one(t) for t in self.outputs]}


def spd_spec(guide_channels: list[int]) -> GraphSpec:
    """SPD: ``image -> (mask, r2, r3, r4)``."""
    features = (
        TensorSpec(name, channels, SPD_OUTPUT_STRIDES[name])
        for name, channels in zip(("r2", "r3", "r4"), guide_channels, strict=True)
    )
    outputs = (TensorSpec("mask", 1, 4), *features)
    return GraphSpec("spd", (TensorSpec("image", 3, 1),), outputs)


def spgm_spec(guide_channels: list[int], state: Sequence[TensorSpec] = ()) -> GraphSpec:
    """SPGM: ``(image, mask, r2, r3, r4, *state) -> (alpha, *next_state)``; its inputs after ``image`` are SPD's
    outputs, then a recurrent SPGM's state (:func:`recurrent_state`; none for a stateless one)."""
    spd = spd_spec(guide_channels)
    following = (TensorSpec(NEXT_STATE_PREFIX + t.name, t.channels, t.stride) for t in state)
    inputs = (TensorSpec("image", 3, 1), *spd.outputs, *state)
    return GraphSpec("spgm", inputs, (TensorSpec("alpha", 1, 1), *following))


def recurrent_state(spgm: nn.Module) -> tuple[TensorSpec, ...]:
    """The state tensors of a recurrent SPGM, in the order it takes them; () for a stateless one.

    Names from :attr:`~spgim.train.models.spgm.SPGM.state_names`, channels and strides from its
    :meth:`~spgim.train.models.spgm.SPGM.state_shapes` (asked at a size every stride divides).
    """
    names = tuple(getattr(spgm, "state_names", ()))
    if not names:
        return ()
    side = 32 * 64
    shapes = spgm.state_shapes(1, side, side)  # type: ignore[operator]
    return tuple(TensorSpec(name, shape[1], side // shape[2]) for name, shape in zip(names, shapes, strict=True))


def upsample_spec(*, dynamic: bool = True) -> GraphSpec:
    """Guided upsampling: ``(alpha, image, frame) -> alpha_full``, always float32 with a uint8 frame.

    ``alpha`` (N, 1, h, w) and ``image`` (N, 3, h, w) are at the working size; ``frame`` is the decoder's
    (N, H, W, 3) uint8 RGB at any size and ``alpha_full`` (N, 1, H, W). The frame's height and width are
    dynamic axes whatever ``dynamic`` says; ``dynamic`` makes batch and the working size dynamic too.
    """
    inputs = (
        TensorSpec("alpha", 1, 1, dtype="float32"),
        TensorSpec("image", 3, 1, dtype="float32"),
        TensorSpec("frame", 3, 1, dtype="uint8", layout="NHWC", frame=True),
    )
    outputs = (TensorSpec("alpha_full", 1, 1, dtype="float32", frame=True),)
    return GraphSpec("upsample", inputs, outputs, working_dynamic=dynamic)
