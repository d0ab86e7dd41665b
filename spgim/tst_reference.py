"""CPU reference of the TST attention op, ``out = softmax(q k^T * scale) v``, single head.

The same C++ code the TensorRT plugin's CUDA kernels are tested against (``csrc/tst_attention``), compiled
into ``spgim._tst_reference`` at install time. It backs the ONNX Runtime custom op that runs the
TensorRT-flavoured ONNX graph on the CPU. Keys are consumed in blocks with an online softmax, so the N x M
score matrix is never stored. float16 tensors are computed in float32 and rounded once at the end, as the
CUDA kernel does.

The op's names (ONNX op_type, plugin version and namespace, attribute name) are read from the C++ header
the plugin is built from, so the exporter and the plugin cannot disagree.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import spgim._tst_reference as _native
except ImportError as error:  # pragma: no cover - only without a compiled extension
    raise ImportError(
        "spgim._tst_reference (the compiled C++ reference of the TST attention) is missing: "
        "reinstall the package so that setup.py builds it, e.g. `pip install -e .` (needs a C++17 compiler)"
    ) from error

OP_TYPE: str = _native.PLUGIN_NAME
"""ONNX op_type = TensorRT plugin name = plugin creator name: ``"TSTAttention"``."""
PLUGIN_VERSION: str = _native.PLUGIN_VERSION
PLUGIN_NAMESPACE: str = _native.PLUGIN_NAMESPACE
SCALE_ATTRIBUTE: str = _native.SCALE_FIELD
"""Name of the float ONNX attribute = TensorRT PluginField holding the logit scale."""
MAX_HEAD_DIM: int = _native.MAX_HEAD_DIM
"""Largest d and dv the TensorRT plugin accepts (the CPU reference itself has no limit)."""

_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, *, num_threads: int = 0) -> np.ndarray:
    """``softmax(q @ k^T * scale) @ v`` per batch item, by the C++ reference.

    Args:
        q: queries, ``(B, N, d)``.
        k: keys, ``(B, M, d)``, with ``M >= 1``.
        v: values, ``(B, M, dv)``.
        scale: multiplies the logits ``q @ k^T`` before the softmax.
        num_threads: worker threads; ``0`` uses every hardware thread.

    Returns:
        ``(B, N, dv)`` array of the inputs' dtype (float32, or float16 computed in float32).

    Raises:
        ValueError: on a dtype other than float32/float16, mixed dtypes, or inconsistent shapes.
    """
    arrays = {"q": q, "k": k, "v": v}
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, got {type(array).__name__}")
        if array.ndim != 3:
            raise ValueError(f"{name} must be 3-D, got shape {array.shape}")
        if array.dtype not in _DTYPES:
            raise ValueError(f"{name} must be float32 or float16, got {array.dtype}")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    (batch, _, head_dim), (batch_k, keys, head_dim_k), (batch_v, keys_v, value_dim) = q.shape, k.shape, v.shape
    if not batch == batch_k == batch_v:
        raise ValueError(f"q, k and v must share the batch size, got shapes {q.shape}, {k.shape}, {v.shape}")
    if head_dim != head_dim_k:
        raise ValueError(f"q and k must share the head dim d, got shapes {q.shape} and {k.shape}")
    if keys != keys_v:
        raise ValueError(f"k and v must share the number of keys M, got shapes {k.shape} and {v.shape}")
    if keys < 1 or head_dim < 1 or value_dim < 1:
        raise ValueError(f"need M, d and dv >= 1, got shapes {q.shape}, {k.shape}, {v.shape}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    out = np.empty((batch, q.shape[1], value_dim), dtype=q.dtype)
    _native.attention(
        np.ascontiguousarray(q),
        np.ascontiguousarray(k),
        np.ascontiguousarray(v),
        out,
        float(scale),
        int(num_threads),
    )
    return out
