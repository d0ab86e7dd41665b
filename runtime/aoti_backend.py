"""AOTInductor packages (``.pt2``) on the CPU behind the backend protocol, and the ResNet-50 ceiling built alike.

A package holds compiled kernels and weights; ``torch._inductor.aoti_load_package`` loads it without any
spgim model code. Packages are compiled for one CPU (``-march=native``): the sidecar records the
compiling CPU's instruction-set flags, and a package is refused where this CPU lacks one of them. The
package's own input checks (``AOTI_RUNTIME_CHECK_INPUTS``) are switched on so that a size outside its
dynamic range raises instead of reading out of bounds; :meth:`AOTInductorBackend.infer` refuses such
sizes first, with one line.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError
from spgim.machine import cpu_facts, native_bf16_missing

from .artifacts import Artifact
from .protocol import batch_slices, check_fixed_batch, recurrent_state, state_or_zeros

PRECISIONS = ("fp32", "bf16")
# Checked once per process, on a package's first call: set before that call so it holds for ours.
CHECK_INPUTS_ENV = "AOTI_RUNTIME_CHECK_INPUTS"


def aoti_unavailable(precision: str) -> str | None:
    """Why AOTInductor packages of ``precision`` should not run here, or None when they can.

    bf16 counts only where the CPU computes it natively (AVX512-BF16 or AMX); elsewhere it is emulated.
    """
    if precision not in PRECISIONS:
        return f"aotinductor runs {' and '.join(PRECISIONS)}, not {precision}"
    if precision == "bf16":
        return native_bf16_missing()
    return None


def _torch_dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]


def _check_cpu(artifact: Artifact) -> None:
    """Refuse a package whose kernels need instruction-set flags this CPU lacks."""
    needed = set(artifact.sidecar.get("cpu_flags", []))
    have = {name for name, present in cpu_facts()["flags"].items() if present}
    lacking = sorted(needed - have)
    if lacking:
        raise SpgimError(
            f"{artifact.path.name} was compiled on {artifact.sidecar.get('cpu', 'another CPU')} for "
            f"{' '.join(lacking)}, which this CPU ({cpu_facts()['model']}) lacks: "
            "export it again here (spgim export --formats pt2)"
        )


def _size_range(sidecar: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """((min H, min W), (max H, max W)) the package accepts, from its sidecar; None where it does not say."""
    sizes = sidecar.get("package_sizes") or {}
    if "min_hw" not in sizes or "max_hw" not in sizes:
        return None
    (low_h, low_w), (high_h, high_w) = sizes["min_hw"], sizes["max_hw"]
    return (int(low_h), int(low_w)), (int(high_h), int(high_w))


def load_package(path: Path) -> Any:
    """An AOTInductor package loaded for the CPU, as a callable; a corrupt one raises one :class:`SpgimError` line."""
    # torch.utils.cpp_extension warns "No CUDA runtime is found" on import on every CPU-only machine.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch._inductor

    os.environ.setdefault(CHECK_INPUTS_ENV, "1")
    if not path.is_file():
        raise SpgimError(f"AOTInductor package {path} is missing")
    # Checked here: torch's loader warns "outdated pt2 file" about a cut-off archive before it fails.
    if not zipfile.is_zipfile(path):
        raise SpgimError(f"cannot load AOTInductor package {path.name}: not a .pt2 archive (truncated or corrupt?)")
    try:
        return torch._inductor.aoti_load_package(str(path))
    except Exception as error:  # zip, pickle and C++ loader errors alike
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SpgimError(
            f"cannot load AOTInductor package {path.name} (corrupt or truncated?): {first[:160]}"
        ) from None


class AOTInductorBackend:
    """SPD and SPGM as AOTInductor packages on the CPU; bf16 packages take and give bfloat16 inside.

    Args:
        spd: the SPD ``.pt2`` artifact.
        spgm: the SPGM ``.pt2`` artifact of the same precision.
        precision: ``"fp32"`` or ``"bf16"``; must match the artifacts'.
        threads: torch's intra-op threads for this process (the packages' OpenMP loops use them); 0 keeps
            torch's default.
    """

    device = "cpu"

    def __init__(self, spd: Artifact, spgm: Artifact, *, precision: str = "fp32", threads: int = 0) -> None:
        import torch

        if precision not in PRECISIONS:
            raise SpgimError(f"aotinductor runs {' and '.join(PRECISIONS)}, not {precision}")
        for artifact in (spd, spgm):
            if artifact.precision != precision:
                raise SpgimError(f"{artifact.path.name} is a {artifact.precision} package, {precision} was asked for")
            _check_cpu(artifact)
        self.torch = torch
        self.name = f"aotinductor ({precision})"
        self.dtype = _torch_dtype(precision)
        if threads > 0:
            torch.set_num_threads(threads)
        self.sizes = _size_range(spgm.sidecar)
        self.batch = int(spgm.sidecar.get("batch", 1))
        self.state_tensors = recurrent_state(spgm.sidecar)
        self.spd = load_package(spd.path)
        self.spgm = load_package(spgm.path)
        self.package_names = f"{spd.path.name}/{spgm.path.name}"

    def infer(self, image: np.ndarray) -> np.ndarray:
        """Alpha ``(N, 1, H, W)`` float32 for an image ``(N, 3, H, W)`` float32 in [0, 1], in the package's batch."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise SpgimError(f"{self.name} takes images (N, 3, H, W), got shape {tuple(image.shape)}")
        self._check_size(int(image.shape[2]), int(image.shape[3]))
        check_fixed_batch(len(image), self.batch, self.name)
        return np.concatenate([self._run(image[part]) for part in batch_slices(len(image), self.batch)])

    def _check_size(self, height: int, width: int) -> None:
        if self.sizes is None:
            return
        (low_h, low_w), (high_h, high_w) = self.sizes
        if height % 32 or width % 32 or not (low_h <= height <= high_h and low_w <= width <= high_w):
            raise SpgimError(
                f"{self.name}: {width}x{height} is outside the packages' sizes {low_w}x{low_h}..{high_w}x{high_h} "
                "(multiples of 32); export pt2 with --dynamic --min-size/--max-size to cover it"
            )

    def _call(self, package: Any, *inputs: Any) -> Any:
        try:
            with self.torch.inference_mode():
                return package(*inputs)
        except RuntimeError as error:
            first = (str(error).strip().splitlines() or ["RuntimeError"])[0]
            raise SpgimError(f"{self.name} failed on {self.package_names}: {first[:200]}") from None

    def _tensor(self, value: Any) -> Any:
        x = self.torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        return x.to(self.dtype).contiguous()

    def _run(self, image: np.ndarray) -> np.ndarray:
        return self.run_spgm(image, self.run_spd(image))

    def run_spd(self, image: Any) -> tuple[Any, ...]:
        """SPD's outputs as tensors in the package's dtype (kept as tensors: numpy has no bfloat16)."""
        return tuple(self._call(self.spd, self._tensor(image)))

    def run_spgm(self, image: Any, features: Sequence[Any], state: Sequence[Any] | None = None) -> Any:
        """Alpha float32 (numpy); with ``state``, ``(alpha, new_state)``, the state as tensors in the package's
        dtype (see :meth:`~.protocol.Backend.run_spgm`)."""
        x = self._tensor(image)
        zeros = partial(self.torch.zeros, dtype=self.dtype)
        given = state_or_zeros(self.state_tensors, state, x.shape, self.name, zeros)
        outputs = self._call(self.spgm, x, *(self._tensor(f) for f in (*features, *given)))
        alpha, *new_state = outputs if isinstance(outputs, list | tuple) else (outputs,)
        result: np.ndarray = alpha.float().contiguous().numpy()
        return result if state is None else (result, tuple(new_state))


def resnet50_aoti(image: Any, *, precision: str, workdir: Path) -> Callable[[], Any]:
    """ResNet-50 (torchvision, random weights) exported and compiled like SPG-IM's packages: one inference per call.

    Args:
        image: the input tensor ``(N, 3, H, W)`` float32; its shape is compiled in (static).
        precision: ``"fp32"`` or ``"bf16"`` (model and input cast, as SPG-IM's bf16 packages are).
        workdir: where the package is written; a package of the same precision and shape there is reused.

    Raises:
        SpgimError: no C++ compiler, or the compile failed.
    """
    import torch
    import torchvision

    from spgim.aoti_build import compile_package

    if precision not in PRECISIONS:
        raise SpgimError(f"aotinductor runs {' and '.join(PRECISIONS)}, not {precision}")
    dtype = _torch_dtype(precision)
    x = image.to(dtype).contiguous()
    path = Path(workdir) / f"resnet50.{precision}.{'x'.join(str(side) for side in x.shape)}.pt2"
    if not path.is_file():
        model = torchvision.models.resnet50().eval().to(dtype)
        with torch.no_grad():
            program = torch.export.export(model, (x,))
        compile_package(program, path)
    package = load_package(path)

    def run() -> Any:
        with torch.inference_mode():
            return package(x)

    return run
