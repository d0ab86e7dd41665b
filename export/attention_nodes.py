"""How the portable ONNX graph spells each TST attention, ``softmax(q k^T * scale) v``.

Each form is an attention function for :func:`spgim.train.models.attention_impl`: the model code
stays the one that TorchScript and the TensorRT flavour trace; only the kernel inside
:class:`~spgim.train.models.attention.TSTAttention` changes while the legacy exporter
(``dynamo=False``) traces it. Shapes as there: ``q`` ``(B, N, d)``, ``k`` ``(B, M, d)``, ``v``
``(B, M, dv)``, result ``(B, N, dv)``.

- ``mha``: one ``com.microsoft::MultiHeadAttention`` node (``num_heads=1``, ``scale`` attribute).
  ONNX Runtime's CPU kernel never holds the N x M matrix (docs/design.md: 0.11 GiB and 0.25-0.38 s
  for the 512 px res2 attention, against 1.65 GiB and 1.6 s for MatMul/Softmax/MatMul).
- ``blocked``: standard ops inside an ONNX ``Loop`` over blocks of :data:`QUERY_BLOCK` queries;
  any runtime that runs ``Loop`` holds one ``QUERY_BLOCK x M`` block of scores at a time.
- ``sdpa``: what the legacy exporter makes of ``scaled_dot_product_attention`` (``sqrt(scale)``
  on q and on k^T, MatMul, Softmax, MatMul): the whole matrix, in the pattern OpenVINO's
  scaled-dot-product fusion was seen to match.
- ``matmul``: MatMul / Softmax / MatMul over the whole N x M matrix (the graph before ``mha``).

``opset-23 Attention`` is not among them: the legacy exporter stops at opset 20, and ONNX
Runtime's CPU kernel for that op holds the N x N matrix anyway (docs/design.md).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import Tensor

from spgim.errors import SpgimError
from spgim.train.models.attention import QUERY_BLOCK, AttentionFn, attention_fused, attention_matmul

MHA_DOMAIN = "com.microsoft"
MHA_OP = "MultiHeadAttention"


class MultiHeadAttentionNode(torch.autograd.Function):
    """Computes the attention in PyTorch; exports as one ``com.microsoft::MultiHeadAttention`` node."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return attention_fused(q, k, v, scale)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, scale: float) -> Any:
        # 3-D q/k/v are (batch, sequence, hidden); with one head the hidden size is d itself.
        out = g.op(f"{MHA_DOMAIN}::{MHA_OP}", q, k, v, num_heads_i=1, scale_f=float(scale))
        out.setType(q.type().with_sizes([None, None, None]))
        return out


def attention_mha(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """The attention that exports as one ``com.microsoft::MultiHeadAttention`` node."""
    out: Tensor = MultiHeadAttentionNode.apply(q, k, v, scale)
    return out


def _blocked_loop(q: Tensor, k: Tensor, v: Tensor, scale: float, block: int) -> Tensor:
    kt = k.transpose(1, 2)
    blocks: list[Tensor] = []
    # An integer trip count: range() with a step exports as float arithmetic that the fp16
    # conversion would turn into float16.
    for index in range((q.size(1) + block - 1) // block):
        start = index * block
        scores = torch.bmm(q[:, start : start + block], kt) * scale
        blocks.append(torch.bmm(torch.softmax(scores, dim=-1), v))
    return torch.cat(blocks, dim=1)


@functools.cache
def _scripted_loop() -> Any:
    with warnings.catch_warnings():
        # torch 2.14 marks torch.jit.script deprecated; the legacy exporter still needs it for Loop.
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(_blocked_loop)


def attention_blocked_loop(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Query blocks (:data:`QUERY_BLOCK` rows) in an ONNX ``Loop`` whose trip count follows the input size.

    Scripted, not traced: a traced Python loop would freeze the number of blocks (and the
    ``Split`` sizes) of the export size into the graph, which then fails at any other size.
    """
    out: Tensor = _scripted_loop()(q, k, v, scale, QUERY_BLOCK)
    return out


PORTABLE_ATTENTION: dict[str, AttentionFn] = {
    "mha": attention_mha,
    "blocked": attention_blocked_loop,
    "sdpa": attention_fused,
    "matmul": attention_matmul,
}

# Paper config, 512x512, one thread, SPGM graph (scripts/attention_forms.py): the fastest form on
# ONNX Runtime 1.32 (3.2 s; blocked 3.5, matmul 3.9) and OpenVINO 2026.4 (3.3 s; sdpa 3.3,
# blocked 3.7, matmul 3.9), at the smallest peak RSS on both (0.54 GiB; matmul 2.6 on ORT).
DEFAULT_PORTABLE_ATTENTION = "mha"


def portable_attention(name: str) -> AttentionFn:
    """The attention function of the portable form ``name``; unknown names raise :class:`SpgimError`."""
    if name not in PORTABLE_ATTENTION:
        raise SpgimError(f"unknown attention form {name!r}; choose one of {', '.join(PORTABLE_ATTENTION)}")
    return PORTABLE_ATTENTION[name]
