"""One source of truth for the exported graphs' inputs and outputs.

SPD and SPGM are exported as two graphs with the model's explicit signatures, so a runtime can
keep SPD's outputs on the device and bind them straight to SPGM's inputs. The names, shapes
(symbolic in batch, height and width), dtypes, dynamic axes, dummy inputs and TensorRT min/opt/max
profiles all come from here; the exporter, the sidecars and the runtime read the same spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Output stride of each tensor: its height and width are the input's divided by this.
SPD_OUTPUT_STRIDES = {"mask": 4, "r2": 4, "r3": 8, "r4": 16}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, channels and output stride (height = H / stride)."""

    name: str
    channels: int
    stride: int

    def shape(self, batch: int, height: int, width: int) -> tuple[int, int, int, int]:
        """The concrete shape for an input of ``height`` x ``width``."""
        return (batch, self.channels, height // self.stride, width // self.stride)

    def symbolic_shape(self) -> list[str | int]:
        """Shape with symbolic batch/height/width, as the sidecar records it."""
        if self.stride == 1:
            return ["batch", self.channels, "height", "width"]
        return ["batch", self.channels, f"height/{self.stride}", f"width/{self.stride}"]


@dataclass(frozen=True)
class GraphSpec:
    """Inputs and outputs of one exported branch."""

    branch: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dummy_inputs(self, height: int, width: int, batch: int = 1, dtype: torch.dtype = torch.float32) -> tuple:
        """Random tensors in [0, 1] of the inputs' shapes, for tracing and parity checks."""
        generator = torch.Generator().manual_seed(0)
        return tuple(torch.rand(t.shape(batch, height, width), generator=generator, dtype=dtype) for t in self.inputs)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX dynamic axes: batch, and the spatial axes of every tensor."""
        axes = {}
        for t in (*self.inputs, *self.outputs):
            suffix = "" if t.stride == 1 else f"_os{t.stride}"
            axes[t.name] = {0: "batch", 2: f"height{suffix}", 3: f"width{suffix}"}
        return axes

    def profile(
        self, min_hw: tuple[int, int], opt_hw: tuple[int, int], max_hw: tuple[int, int], batch: tuple[int, int, int]
    ) -> dict[str, list[list[int]]]:
        """TensorRT optimisation profile: for each input, its min, opt and max shapes."""
        return {
            t.name: [
                list(t.shape(batch[0], *min_hw)),
                list(t.shape(batch[1], *opt_hw)),
                list(t.shape(batch[2], *max_hw)),
            ]
            for t in self.inputs
        }

    def describe(self, dtype: str) -> dict[str, Any]:
        """Names, symbolic shapes and dtypes of inputs and outputs, for the sidecar."""
        return {
            "inputs": [{"name": t.name, "shape": t.symbolic_shape(), "dtype": dtype} for t in self.inputs],
            "outputs": [{"name": t.name, "shape": t.symbolic_shape(), "dtype": dtype} for t in self.outputs],
        }


def spd_spec(guide_channels: list[int]) -> GraphSpec:
    """SPD: ``image -> (mask, r2, r3, r4)``."""
    features = (
        TensorSpec(name, channels, SPD_OUTPUT_STRIDES[name])
        for name, channels in zip(("r2", "r3", "r4"), guide_channels, strict=True)
    )
    outputs = (TensorSpec("mask", 1, 4), *features)
    return GraphSpec("spd", (TensorSpec("image", 3, 1),), outputs)


def spgm_spec(guide_channels: list[int]) -> GraphSpec:
    """SPGM: ``(image, mask, r2, r3, r4) -> alpha``; its inputs after ``image`` are SPD's outputs."""
    spd = spd_spec(guide_channels)
    return GraphSpec("spgm", (TensorSpec("image", 3, 1), *spd.outputs), (TensorSpec("alpha", 1, 1),))
