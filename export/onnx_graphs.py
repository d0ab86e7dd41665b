"""TorchScript and ONNX graphs of one branch: tracing, the two ONNX flavours, the fp16 conversion."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from spgim.train.models import attention_impl

from .io_spec import GraphSpec
from .plugin_node import plugin_attention

# Ops the fp16 graphs keep in fp32: softmax (portable attention), and the ops that make up the
# input normalisation and the final clamps (Sub/Div on the image, Clip on the outputs).
FP32_OPS = ["Softmax", "Clip"]


def trace_torchscript(model: nn.Module, spec: GraphSpec, example: tuple, path: Path) -> None:
    """Trace ``model`` (eval mode) into a TorchScript file that needs no spgim code to load."""
    with warnings.catch_warnings(), torch.no_grad(), attention_impl(model, "fused"):
        # torch 2.14 marks TorchScript deprecated; the design card asks for it and C++ loads it.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        # Not frozen: a runtime may still cast it to bf16/fp16 and freeze it for its own device.
        torch.jit.save(traced, str(path))


def export_onnx(
    model: nn.Module,
    spec: GraphSpec,
    example: tuple,
    path: Path,
    *,
    flavour: str,
    opset: int,
    dynamic: bool,
) -> onnx.ModelProto:
    """Export one branch to ONNX and check it with ``onnx.checker`` (full check).

    Args:
        flavour: ``"portable"`` (attention as MatMul/Softmax/MatMul) or ``"tensorrt"`` (one
            ``TSTAttention`` plugin node per attention).
    """
    impl = {"portable": "matmul", "tensorrt": plugin_attention}[flavour]
    with warnings.catch_warnings(), torch.no_grad(), attention_impl(model, impl):
        # The legacy exporter is the one that emits an autograd.Function's symbolic() as a plain
        # custom node; the dynamo exporter would need a registered schema and translation table.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes() if dynamic else None,
            do_constant_folding=True,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    return graph


def convert_fp16(source: Path, target: Path) -> onnx.ModelProto:
    """An fp16 copy of an fp32 ONNX graph, made on the CPU, with fp16 inputs and outputs.

    Softmax, the input normalisation and the output clamps stay in fp32 (Casts around them).
    """
    from onnxconverter_common import float16

    graph = onnx.load(str(source))
    blocked_nodes = _normalisation_nodes(graph)
    with warnings.catch_warnings():
        # It reports every weight below fp16's smallest normal number it rounds; that is expected.
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            graph,
            keep_io_types=False,
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP32_OPS],
            node_block_list=blocked_nodes,
            disable_shape_infer=False,
        )
    onnx.checker.check_model(converted, full_check=True)
    onnx.save(converted, str(target))
    return converted


def _normalisation_nodes(graph: onnx.ModelProto) -> list[str]:
    """The Sub and Div that apply the ImageNet mean and std to the ``image`` input."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names = []
    for sub in consumers.get("image", []):
        if sub.op_type == "Sub":
            names.append(sub.name)
            names.extend(div.name for div in consumers.get(sub.output[0], []) if div.op_type == "Div")
    return names
