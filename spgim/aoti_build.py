"""AOTInductor's C++ compiler probe and its one compile step, shared by the exporter and the runtime.

``spgim export --formats pt2`` compiles SPD and SPGM with :func:`compile_package`; the runtime compiles
its ResNet-50 ceiling with the same function, so both are built with the same compiler and options.
Neither imports the other: this module needs only the standard library until a compile starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError

HINT = "AOTInductor needs a C++ compiler: apt-get install g++ (or set CXX to one)"

# The options every package is compiled with. Freezing folds BatchNorm into the convolutions and lets
# the CPU convolutions use oneDNN's pre-packed weights; without it each conv reorders its weights per call.
INDUCTOR_OPTIONS: dict[str, Any] = {"freezing": True}


def _compiler_name() -> str:
    # Inductor reads CXX once, when torch._inductor.config is imported; read it here at call time instead
    # and hand the result to the compile, so the probe and the compile never disagree.
    return os.environ.get("CXX") or "g++"


def find_compiler() -> tuple[str | None, str]:
    """The C++ compiler AOTInductor would use: (its path or None, its ``--version`` first line or why not)."""
    name = _compiler_name()
    path = shutil.which(name)
    if path is None:
        return None, f"{name} not found on PATH"
    try:
        result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{path} --version failed ({type(error).__name__})"
    lines = result.stdout.strip().splitlines()
    return path, lines[0] if lines else path


def aoti_compiler_missing() -> str | None:
    """None where a C++ compiler is there for AOTInductor, else one line saying how to get one."""
    path, detail = find_compiler()
    if path is None:
        return f"{HINT} ({detail})"
    return None


def compile_package(program: Any, path: Path) -> dict[str, Any]:
    """AOTInductor-compile an exported program for this CPU into one ``.pt2`` package at ``path``.

    Args:
        program: a ``torch.export.ExportedProgram`` (in eval mode, in the dtype the package should run).
        path: the package to write (``.pt2``).

    Returns:
        Facts for the sidecar: compiler, compile seconds, the vector ISA the kernels target, options.

    Raises:
        SpgimError: no C++ compiler, or the compile failed (one line).
    """
    # torch.utils.cpp_extension warns "No CUDA runtime is found" on import on every CPU-only machine.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import torch
    from torch._inductor import cpu_vec_isa

    compiler, version = find_compiler()
    if compiler is None:
        raise SpgimError(f"{HINT} ({version})")
    options = {**INDUCTOR_OPTIONS, "cpp.cxx": (None, compiler)}
    start = time.perf_counter()
    try:
        # Inductor freezes (folds BatchNorm, pre-packs oneDNN weights) only with autograd off.
        with torch.no_grad():
            written = torch._inductor.aoti_compile_and_package(
                program, package_path=str(path), inductor_configs=options
            )
    except Exception as error:  # Inductor raises many types (CppCompileError, InvalidCxxCompiler, lowering errors)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise SpgimError(f"AOTInductor could not compile {path.name}: {first[:200]}") from None
    seconds = time.perf_counter() - start
    if Path(written) != path:
        raise SpgimError(f"AOTInductor wrote {written}, expected {path}")
    with torch._inductor.config.patch({"cpp.cxx": options["cpp.cxx"]}):
        isa = str(cpu_vec_isa.pick_vec_isa()) or "none"
    return {
        "compiler": version,
        "compile_seconds": round(seconds, 1),
        # Kernels are built with -march=native and this vector ISA: the package runs only on CPUs that have it.
        "vec_isa": isa,
        "inductor_options": dict(INDUCTOR_OPTIONS),
    }
