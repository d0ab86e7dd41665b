"""One branch as a ``torch.export`` program, AOTInductor-compiled for this CPU into one ``.pt2`` package.

The successor of the TorchScript artifact (torch 2.14 marks TorchScript deprecated): the package holds
the compiled kernels and the weights, and loads with ``torch._inductor.aoti_load_package`` in a process
that has no spgim model code. Like a TensorRT engine it is built for one machine: its kernels target the
compiling CPU's instruction set (``-march=native``), which the sidecar records.

Decisions:
- Input and output dtype is the precision's: a bf16 package takes and gives bfloat16 (like the fp16 ONNX
  graphs take float16). Casting inside would compute the same (the first op would be the same cast) and
  would make SPD's outputs round-trip through float32 on their way to SPGM.
- The batch is static, the example's (1 from ``spgim export``): the runtime runs larger batches frame by
  frame. A dynamic batch would add a third symbol to every kernel for no gain on a CPU that a single
  512x512 frame already keeps busy.
- Height and width are dynamic within the size profile, as ``32 * h`` and ``32 * w`` so that every
  tensor at stride s is ``(32 // s) * h`` exactly: the compiled kernels never see a size that is not a
  multiple of 32, and SPGM's inputs are tied to its image.
"""

from __future__ import annotations

import copy
import inspect
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spgim.aoti_build import aoti_compiler_missing, compile_package
from spgim.errors import SpgimError
from spgim.machine import cpu_facts
from spgim.train.models import attention_impl

from .io_spec import GraphSpec

PT2_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Input sizes are multiples of 32 throughout the project (docs/design.md); the dynamic dims count in these steps.
SIZE_MULTIPLE = 32

__all__ = ["PT2_DTYPES", "aoti_compiler_missing", "dynamic_shapes", "export_pt2"]


def dynamic_shapes(spec: GraphSpec, min_hw: tuple[int, int], max_hw: tuple[int, int]) -> dict[str, dict[int, Any]]:
    """``torch.export`` dynamic shapes: the image is ``32 * h`` by ``32 * w``, a tensor at stride s ``(32 // s) * h``.

    Args:
        spec: the branch's inputs.
        min_hw: smallest (height, width), multiples of 32.
        max_hw: largest (height, width), multiples of 32.
    """
    for side in (*min_hw, *max_hw):
        if side <= 0 or side % SIZE_MULTIPLE:
            raise SpgimError(f"pt2 size profile {min_hw}..{max_hw} must be positive multiples of {SIZE_MULTIPLE}")
    h = torch.export.Dim("h32", min=min_hw[0] // SIZE_MULTIPLE, max=max_hw[0] // SIZE_MULTIPLE)
    w = torch.export.Dim("w32", min=min_hw[1] // SIZE_MULTIPLE, max=max_hw[1] // SIZE_MULTIPLE)
    return {t.name: {2: (SIZE_MULTIPLE // t.stride) * h, 3: (SIZE_MULTIPLE // t.stride) * w} for t in spec.inputs}


def export_pt2(
    model: nn.Module,
    spec: GraphSpec,
    example: tuple,
    path: Path,
    *,
    precision: str,
    min_hw: tuple[int, int],
    max_hw: tuple[int, int],
    dynamic: bool,
) -> dict[str, Any]:
    """Export one branch with ``torch.export`` and AOTInductor-compile it into the package ``path``.

    The model is exported in eval mode with torch's fused attention (``attention_fused`` hands the flash
    kernel contiguous q, k, v); it is not modified (a bf16 export casts a copy).

    Args:
        model: SPD or SPGM.
        spec: its inputs and outputs (:mod:`.io_spec`); input names become the program's argument names.
        example: example inputs, float32, at the export size (inside the profile); their batch is the
            package's (static).
        path: the ``.pt2`` package to write.
        precision: ``"fp32"`` or ``"bf16"`` (model, inputs and outputs in bfloat16).
        min_hw: smallest (height, width) of the profile; used when ``dynamic``.
        max_hw: largest (height, width) of the profile; used when ``dynamic``.
        dynamic: height and width dynamic within the profile, else fixed at the example's size.

    Returns:
        Facts for the sidecar: compiler, export and compile seconds, vector ISA and CPU flags the kernels
        need, dynamic dims, batch, I/O dtype, the sizes the package accepts.

    Raises:
        SpgimError: no C++ compiler, an unknown precision, a model ``torch.export`` cannot capture, or a
            failed compile (one line each).
    """
    missing = aoti_compiler_missing()
    if missing is not None:
        raise SpgimError(missing)
    if precision not in PT2_DTYPES:
        raise SpgimError(f"pt2 precision {precision!r} is not one of {', '.join(PT2_DTYPES)}")
    dtype = PT2_DTYPES[precision]
    model = model.eval()
    if dtype != torch.float32:
        model = _cast_copy(model, dtype)
    inputs = tuple(tensor.to(dtype) for tensor in example)
    shapes = _by_argument(model, spec, dynamic_shapes(spec, min_hw, max_hw)) if dynamic else None
    start = time.perf_counter()
    with torch.no_grad(), attention_impl(model, "fused"):
        try:
            program = torch.export.export(model, inputs, dynamic_shapes=shapes)
        except Exception as error:  # torch.export raises UserError, GuardOnDataDependentSymNode, ...
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SpgimError(f"torch.export cannot capture {spec.branch}: {first[:200]}") from None
    export_seconds = time.perf_counter() - start
    smallest, largest = accepted_sizes(program)
    facts = compile_package(program, path)
    cpu = cpu_facts()
    return {
        **facts,
        "export_seconds": round(export_seconds, 1),
        "io_dtype": str(dtype).removeprefix("torch."),
        "batch": int(inputs[0].shape[0]),
        "dynamic_dims": {"height": f"{SIZE_MULTIPLE}*h32", "width": f"{SIZE_MULTIPLE}*w32"} if dynamic else {},
        # (H, W) bounds the package itself accepts; the runtime refuses other sizes before calling it.
        "package_sizes": {"min_hw": smallest, "max_hw": largest, "multiple": SIZE_MULTIPLE},
        "cpu": cpu["model"],
        "cpu_flags": sorted(name for name, present in cpu["flags"].items() if present),
    }


def accepted_sizes(
    program: torch.export.ExportedProgram, name: str | None = None, axes: tuple[int, ...] = (2, 3)
) -> tuple[list[int], list[int]]:
    """The smallest and largest sizes along ``axes`` (default (height, width) of NCHW) of one input of a program.

    ``name`` is the input's name (default: the first input). Read from the program, not the profile:
    ``torch.export`` raises a dynamic dim's lower bound to 2 (it treats 0 and 1 as special), so a profile that
    starts at 32 px yields a package that starts at 64.
    """
    name = name or program.graph_signature.user_inputs[0]
    node = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == name)
    shape = node.meta["val"].shape
    smallest, largest = [], []
    for axis in axes:
        side = shape[axis]
        if isinstance(side, int):
            smallest.append(side)
            largest.append(side)
            continue
        expr = side.node.expr
        (symbol,) = expr.free_symbols
        bounds = program.range_constraints[symbol]
        smallest.append(int(expr.subs(symbol, bounds.lower)))
        largest.append(int(expr.subs(symbol, bounds.upper)))
    return smallest, largest


def _by_argument(model: nn.Module, spec: GraphSpec, shapes: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """The inputs' dynamic shapes keyed as ``torch.export`` binds them to ``model.forward``'s arguments.

    The same as by input name where every input is an argument of its own; a recurrent SPGM's state tensors
    arrive through ``*state``, which takes the tuple of their shapes.
    """
    bound = inspect.signature(model.forward).bind(*(shapes[t.name] for t in spec.inputs))
    return dict(bound.arguments)


def _cast_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    # A copy: Module.to casts in place, and the caller exports fp32 from the same model afterwards.
    return copy.deepcopy(model).to(dtype)
