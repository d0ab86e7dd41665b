"""What this machine is: CPU model and the instruction sets that decide engine speed, GPUs, library versions.

Everything that depends on the CPU says what it found (bench JSON, ``auto``'s ranking key, bf16 refusals):
machines of one project differ (AVX2 only on one, AVX-512 with AVX512-BF16 or AMX on another).
It sits in the shared ground because export (what an AOTInductor package was compiled for) and runtime
(what an engine may run here) both ask it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

# /proc/cpuinfo flags that decide which kernels the CPU engines pick.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
# A bf16 figure counts only where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is emulated.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Versions that change what an engine compiles or how fast it runs: part of auto's ranking key.
LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt", "numpy", "spgim")


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    facts: dict[str, str] = {}
    if not path.is_file():
        return facts
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            if facts:
                break
            continue
        key, _, value = line.partition(":")
        facts.setdefault(key.strip(), value.strip())
    return facts


def cpu_caches(cpu: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> dict[str, str]:
    """Each cache of the first CPU as the kernel reports it, e.g. ``{"L1d": "48K", "L2": "1024K"}`` (empty where
    sysfs has none). Two CPUs with one model name and the same flags can differ here, and in speed."""
    caches: dict[str, str] = {}
    for index in sorted(cpu.glob("index*")):
        try:
            level, kind, size = ((index / name).read_text().strip() for name in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        caches[f"L{level}{suffix}"] = size
    return caches


@functools.cache
def cpu_facts() -> dict[str, Any]:
    """CPU model, generation (vendor, family, model, stepping), caches, logical and physical cores, and which of
    :data:`RELEVANT_FLAGS` it has."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    logical = os.cpu_count() or 1
    cores_per_socket = int(info.get("cpu cores", "0") or 0)
    siblings = int(info.get("siblings", "0") or 0)
    # cpu cores / siblings describe one socket; their ratio removes SMT threads from the logical count.
    physical = logical * cores_per_socket // siblings if cores_per_socket and siblings else logical
    return {
        "model": info.get("model name", platform.processor() or platform.machine()),
        # Family, model and stepping tell CPU generations apart where the model name does not ("AMD EPYC").
        "generation": [info.get(key, "") for key in ("vendor_id", "cpu family", "model", "stepping")],
        "caches": cpu_caches(),
        "machine": platform.machine(),
        "logical_cores": logical,
        "physical_cores": max(1, physical),
        "flags": {flag: flag in flags for flag in RELEVANT_FLAGS},
    }


def flags_line() -> str:
    """One line naming the CPU and its relevant flags, e.g. ``AMD EPYC (family 26 model 2, 2 cores): avx2 fma;
    no amx_tile ...``."""
    facts = cpu_facts()
    have = [name for name, present in facts["flags"].items() if present]
    lack = [name for name, present in facts["flags"].items() if not present]
    _, family, model, _ = facts["generation"]
    generation = f"family {family} model {model}, " if family else ""
    cores = f"{generation}{facts['physical_cores']} cores"
    return f"{facts['model']} ({cores}): {' '.join(have) or 'none of the listed flags'}" + (
        f"; no {' '.join(lack)}" if lack else ""
    )


def native_bf16_missing() -> str | None:
    """None where the CPU computes bf16 natively, else one line saying what it lacks."""
    flags = cpu_facts()["flags"]
    if any(flags[name] for name in NATIVE_BF16_FLAGS):
        return None
    return (
        f"this CPU ({cpu_facts()['model']}) has no native bf16 (/proc/cpuinfo lacks "
        f"{' and '.join(NATIVE_BF16_FLAGS)}): bf16 would be emulated, slower than fp32; use fp32 here"
    )


@functools.cache
def library_versions() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (absent ones left out); read from metadata, nothing imported."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def gpu_names() -> list[str]:
    """Names of the CUDA GPUs torch sees (empty without one)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [str(torch.cuda.get_device_name(index)) for index in range(torch.cuda.device_count())]


def machine_facts() -> dict[str, Any]:
    """CPU, GPUs and library versions: what a benchmark records and what keys auto's ranking cache."""
    return {
        "cpu": cpu_facts(),
        "gpus": gpu_names(),
        "libraries": library_versions(),
        "python": platform.python_version(),
    }
