"""The ``upsample`` graph's AOTInductor package: guided upsampling with the frame's size dynamic.

:func:`spgim.export.pt2.export_pt2` makes every tensor's height and width ``32 * h`` by ``32 * w`` of the
working size; the upsample graph's frame is ``(N, H, W, 3)`` at any size, so its two axes get their own
symbols here (bounded by the export's frame profile), while alpha and image follow the working size as in
SPD and SPGM (dynamic with ``--dynamic``, else fixed). The package is always fp32: box-filter sums of
squares want it, and it is cheap next to SPD and SPGM.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spgim.aoti_build import aoti_compiler_missing, compile_package
from spgim.errors import SpgimError
from spgim.machine import cpu_facts

from .io_spec import GraphSpec
from .pt2 import SIZE_MULTIPLE, accepted_sizes


def upsample_dynamic_shapes(
    spec: GraphSpec,
    min_hw: tuple[int, int],
    max_hw: tuple[int, int],
    frame_min_hw: tuple[int, int],
    frame_max_hw: tuple[int, int],
    *,
    dynamic: bool,
) -> dict[str, dict[int, Any] | None]:
    """``torch.export`` dynamic shapes: the frame's axes always, alpha's and image's (working size) if ``dynamic``."""
    # torch.export treats sizes 0 and 1 as special: a dynamic dim starts at 2 at the least.
    frame_height = torch.export.Dim("frame_height", min=max(2, frame_min_hw[0]), max=frame_max_hw[0])
    frame_width = torch.export.Dim("frame_width", min=max(2, frame_min_hw[1]), max=frame_max_hw[1])
    h = torch.export.Dim("h32", min=min_hw[0] // SIZE_MULTIPLE, max=max_hw[0] // SIZE_MULTIPLE)
    w = torch.export.Dim("w32", min=min_hw[1] // SIZE_MULTIPLE, max=max_hw[1] // SIZE_MULTIPLE)
    shapes: dict[str, dict[int, Any] | None] = {}
    for t in spec.inputs:
        height, width = t.spatial_axes
        if t.frame:
            shapes[t.name] = {height: frame_height, width: frame_width}
        elif dynamic:
            shapes[t.name] = {height: (SIZE_MULTIPLE // t.stride) * h, width: (SIZE_MULTIPLE // t.stride) * w}
        else:
            shapes[t.name] = None
    return shapes


def export_upsample_pt2(
    model: nn.Module,
    spec: GraphSpec,
    example: tuple,
    path: Path,
    *,
    min_hw: tuple[int, int],
    max_hw: tuple[int, int],
    frame_min_hw: tuple[int, int],
    frame_max_hw: tuple[int, int],
    dynamic: bool,
) -> dict[str, Any]:
    """Export the upsample graph with ``torch.export`` and AOTInductor-compile it (fp32) into ``path``.

    Args:
        model: a :class:`~spgim.train.models.upsample.GuidedUpsampler`.
        spec: :func:`~spgim.export.io_spec.upsample_spec`.
        example: (alpha, image, frame): float32, float32, uint8; the frame inside the frame bounds.
        path: the ``.pt2`` package to write.
        min_hw: smallest working (height, width); used when ``dynamic``.
        max_hw: largest working (height, width); used when ``dynamic``.
        frame_min_hw: smallest frame (height, width).
        frame_max_hw: largest frame (height, width).
        dynamic: working size (alpha, image) dynamic within min/max, else fixed at the example's.

    Returns:
        Facts for the sidecar, as :func:`~spgim.export.pt2.export_pt2` gives them, with the frame's bounds.
    """
    missing = aoti_compiler_missing()
    if missing is not None:
        raise SpgimError(missing)
    model = model.eval()
    shapes = upsample_dynamic_shapes(spec, min_hw, max_hw, frame_min_hw, frame_max_hw, dynamic=dynamic)
    start = time.perf_counter()
    with torch.no_grad():
        try:
            program = torch.export.export(model, tuple(example), dynamic_shapes=shapes)
        except Exception as error:  # torch.export raises UserError, GuardOnDataDependentSymNode, ...
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SpgimError(f"torch.export cannot capture {spec.branch}: {first[:200]}") from None
    export_seconds = time.perf_counter() - start
    smallest, largest = accepted_sizes(program)
    frame_smallest, frame_largest = _frame_sizes(program, spec)
    facts = compile_package(program, path)
    cpu = cpu_facts()
    dims = {"frame_height": "frame_height", "frame_width": "frame_width"}
    if dynamic:
        dims = {"height": f"{SIZE_MULTIPLE}*h32", "width": f"{SIZE_MULTIPLE}*w32", **dims}
    return {
        **facts,
        "export_seconds": round(export_seconds, 1),
        "io_dtype": "float32",
        "frame_dtype": "uint8",
        "batch": int(example[0].shape[0]),
        "dynamic_dims": dims,
        "package_sizes": {
            "min_hw": smallest,
            "max_hw": largest,
            "multiple": SIZE_MULTIPLE,
            "frame_min_hw": frame_smallest,
            "frame_max_hw": frame_largest,
        },
        "cpu": cpu["model"],
        "cpu_flags": sorted(name for name, present in cpu["flags"].items() if present),
    }


def _frame_sizes(program: torch.export.ExportedProgram, spec: GraphSpec) -> tuple[list[int], list[int]]:
    """The smallest and largest (height, width) of the frame input the program accepts."""
    (frame,) = [t for t in spec.inputs if t.frame]
    return accepted_sizes(program, frame.name, tuple(frame.spatial_axes))
