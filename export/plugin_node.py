"""The TensorRT-flavour attention: one ``TSTAttention`` node per TST attention in the ONNX graph.

Used through :func:`spgim.train.models.attention_impl`, so the model code is the same one the
portable graph and TorchScript trace; only the kernel inside :class:`TSTAttention` changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from spgim.tst_op import ONNX_DOMAIN, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION, SCALE_FIELD


class TSTAttentionNode(torch.autograd.Function):
    """Computes the attention in PyTorch; exports as one custom node (legacy ONNX exporter)."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
        return torch.nn.functional.scaled_dot_product_attention(
            q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale
        ).squeeze(1)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, scale: float) -> Any:
        attributes: dict[str, Any] = {f"{SCALE_FIELD}_f": float(scale), "plugin_version_s": PLUGIN_VERSION}
        if PLUGIN_NAMESPACE:
            attributes["plugin_namespace_s"] = PLUGIN_NAMESPACE
        out = g.op(f"{ONNX_DOMAIN}::{PLUGIN_NAME}", q, k, v, **attributes)
        out.setType(q.type().with_sizes([None, None, None]))
        return out


def plugin_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """The attention implementation that exports as the plugin node."""
    out: Tensor = TSTAttentionNode.apply(q, k, v, scale)
    return out
