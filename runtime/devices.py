"""What this machine can run: CUDA through torch, TensorRT's Python package, ONNX Runtime's providers.

Cheap probes, so ``backend="auto"`` and ``spgim bench --backend all`` can skip GPU backends quietly
on a machine without a GPU.
"""

from __future__ import annotations

from typing import Any

# ONNX Runtime execution provider per GPU backend name.
ORT_PROVIDERS = {"onnxruntime-cuda": "CUDAExecutionProvider", "onnxruntime-trt": "TensorrtExecutionProvider"}


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU."""
    import torch

    return bool(torch.cuda.is_available())


def import_tensorrt() -> Any | None:
    """The ``tensorrt`` module, or None where it is not installed (or its libraries do not load)."""
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    return tensorrt


def installed_tensorrt_version() -> str | None:
    """``tensorrt.__version__``, or None."""
    trt = import_tensorrt()
    return None if trt is None else str(trt.__version__)


def gpu_facts(index: int = 0) -> tuple[str, str] | None:
    """(name, compute capability ``"major.minor"``) of CUDA device ``index``, or None without one."""
    if not cuda_available():
        return None
    import torch

    if index >= torch.cuda.device_count():
        return None
    properties = torch.cuda.get_device_properties(index)
    return str(properties.name), f"{properties.major}.{properties.minor}"


def ort_available_providers() -> list[str]:
    """ONNX Runtime's available execution providers (``CPUExecutionProvider`` only with the CPU package)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def unavailable_reason(backend: str) -> str | None:
    """Why ``backend`` cannot run on this machine, or None when it can (CPU backends always can)."""
    if backend in ORT_PROVIDERS:
        providers = ort_available_providers()
        if ORT_PROVIDERS[backend] not in providers or not cuda_available():
            return f"{backend} needs onnxruntime-gpu and a CUDA GPU; available providers: {', '.join(providers)}"
    elif backend == "torchscript-cuda":
        if not cuda_available():
            return "torchscript-cuda needs a CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    elif backend == "tensorrt":
        if import_tensorrt() is None:
            return "tensorrt needs TensorRT's Python package (pip install tensorrt) and a CUDA GPU"
        if not cuda_available():
            return "tensorrt needs a CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    return None
