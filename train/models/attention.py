"""The TST attention, ``softmax(q k^T * scale) v``, behind one swappable module.

SPGM calls :class:`TSTAttention` with explicit ``(q, k, v, scale)``; which kernel computes it is
a property of the module instance, not of the model code, so the exporter can trace the same
model with standard ops (portable ONNX) or with one custom node (the TensorRT plugin) without a
second copy of any module.

Shapes: ``q`` is ``(B, N, d)`` (one row per SPGM position), ``k`` is ``(B, M, d)`` and ``v`` is
``(B, M, dv)`` (SPD positions); the result is ``(B, N, dv)``. At 512 px the res2 stage has
N = M = 16384, so the default kernels never hold the whole N x M matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionFn = Callable[[Tensor, Tensor, Tensor, float], Tensor]

# Rows per block in the blocked kernel: 1024 x 16384 fp32 scores is 64 MiB, well inside cache-friendly
# working sets for the two-core CPU while keeping the loop short.
QUERY_BLOCK = 1024


def attention_fused(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """torch's fused ``scaled_dot_product_attention`` (flash attention on CPU and GPU).

    TST's q, k, v are transposed views of conv outputs (last-dim stride N). On such views the CPU
    dispatcher silently falls back to the math kernel, which holds the whole N x M matrix (res2 at
    512 px, one attention alone: 7.0 s and 3.0 GiB peak vs 1.4 s and 0.7 GiB for contiguous inputs);
    the O(N d) copies select the flash kernel, in eager, TorchScript and torch.export alike.
    """
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale)
    return out.squeeze(1)


def attention_blocked(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Standard ops over blocks of queries: memory O(QUERY_BLOCK x M) instead of O(N x M)."""
    kt = k.transpose(1, 2)
    blocks = [
        torch.softmax(torch.bmm(q_block, kt) * scale, dim=-1) @ v for q_block in torch.split(q, QUERY_BLOCK, dim=1)
    ]
    return torch.cat(blocks, dim=1)


def attention_matmul(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """MatMul / Softmax / MatMul over the whole matrix: the portable ONNX form."""
    return torch.softmax(torch.bmm(q, k.transpose(1, 2)) * scale, dim=-1) @ v


ATTENTION_IMPLS: dict[str, AttentionFn] = {
    "fused": attention_fused,
    "blocked": attention_blocked,
    "matmul": attention_matmul,
}


class TSTAttention(nn.Module):
    """``softmax(q k^T * scale) v`` with a kernel chosen per instance (default ``"fused"``)."""

    def __init__(self, impl: str | AttentionFn = "fused") -> None:
        super().__init__()
        self.impl: str | AttentionFn = impl

    def forward(self, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        fn = ATTENTION_IMPLS[self.impl] if isinstance(self.impl, str) else self.impl
        return fn(q, k, v, scale)


@contextmanager
def attention_impl(model: nn.Module, impl: str | AttentionFn) -> Iterator[None]:
    """Temporarily compute every :class:`TSTAttention` in ``model`` with ``impl``.

    Args:
        model: any module; its TST attention submodules are switched, nothing else changes.
        impl: a name from :data:`ATTENTION_IMPLS` or a function ``(q, k, v, scale) -> out``.
    """
    if isinstance(impl, str) and impl not in ATTENTION_IMPLS:
        raise ValueError(f"unknown attention implementation {impl!r}; known: {sorted(ATTENTION_IMPLS)}")
    modules = [m for m in model.modules() if isinstance(m, TSTAttention)]
    previous = [m.impl for m in modules]
    for module in modules:
        module.impl = impl
    try:
        yield
    finally:
        for module, old in zip(modules, previous, strict=True):
            module.impl = old
