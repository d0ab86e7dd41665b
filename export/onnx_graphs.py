"""TorchScript and ONNX graphs of one branch: tracing, the two ONNX flavours, the fp16 conversion."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from spgim.errors import SpgimError
from spgim.train.models import attention_impl

from .attention_nodes import DEFAULT_PORTABLE_ATTENTION, portable_attention
from .io_spec import GraphSpec
from .plugin_node import plugin_attention

# Ops the fp16 graphs keep in fp32: softmax (the matmul, sdpa and blocked attention forms), and
# the ops that make up the input normalisation and the final clamps (Sub/Div on the image, Clip
# on the outputs). com.microsoft::MultiHeadAttention runs in fp16: ONNX Runtime's CPU kernel
# takes float16 (tests/test_attention_export.py checks it against eager).
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
    attention: str = DEFAULT_PORTABLE_ATTENTION,
) -> onnx.ModelProto:
    """Export one branch to ONNX and check it with ``onnx.checker`` (full check).

    Args:
        flavour: ``"portable"`` (standard ops, plus com.microsoft ones for the ``mha`` form) or
            ``"tensorrt"`` (one ``TSTAttention`` plugin node per attention).
        attention: the portable flavour's attention form, a key of
            :data:`~spgim.export.attention_nodes.PORTABLE_ATTENTION`; the TensorRT flavour ignores it.
    """
    if flavour not in ("portable", "tensorrt"):
        raise SpgimError(f"unknown ONNX flavour {flavour!r}; choose portable or tensorrt")
    impl = portable_attention(attention) if flavour == "portable" else plugin_attention
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
    if _restore_unused_inputs(graph, spec, example, dynamic):
        onnx.save(graph, str(path))
    onnx.checker.check_model(graph, full_check=True)
    return graph


def _restore_unused_inputs(graph: onnx.ModelProto, spec: GraphSpec, example: tuple, dynamic: bool) -> bool:
    """Put back the spec's inputs that the exporter dropped because the model never reads them.

    A SPGM that attends only at res4 (the live configuration) or not at all (the ``basic`` variants) does not
    read r2/r3; the legacy exporter then leaves them out, and the graph would no longer take SPD's outputs as
    they come. Restored inputs are declared and unused, so every runtime accepts the one SPD -> SPGM contract.
    """
    present = {value.name for value in graph.graph.input}
    missing = [(index, t) for index, t in enumerate(spec.inputs) if t.name not in present]
    axes = spec.dynamic_axes() if dynamic else {}
    for index, tensor in missing:
        shape: list[int | str] = list(example[index].shape)
        for axis, name in axes.get(tensor.name, {}).items():
            shape[axis] = name
        value = onnx.helper.make_tensor_value_info(tensor.name, onnx.TensorProto.FLOAT, shape)
        graph.graph.input.append(value)
    if missing:
        order = {name: i for i, name in enumerate(spec.input_names)}
        inputs = sorted(graph.graph.input, key=lambda v: order.get(v.name, len(order)))
        del graph.graph.input[:]
        graph.graph.input.extend(inputs)
    return bool(missing)


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
    _half_sequences(converted.graph)
    _sort_with_outer_scope(converted.graph)
    onnx.checker.check_model(converted, full_check=True)
    onnx.save(converted, str(target))
    return converted


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies a node carries (Loop, If, Scan)."""
    graphs = []
    for attribute in node.attribute:
        if attribute.HasField("g"):
            graphs.append(attribute.g)
        graphs.extend(attribute.graphs)
    return graphs


def _half_sequences(graph: onnx.GraphProto) -> None:
    """Make the tensor sequences of the blocked form's Loop float16 too.

    The converter rewrites tensor types only: it leaves ``SequenceEmpty(dtype=float)`` and the
    sequence value_info float32 while the Loop now inserts float16 blocks into them.
    """
    for node in graph.node:
        if node.op_type == "SequenceEmpty":
            for attribute in node.attribute:
                if attribute.name == "dtype" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
        for subgraph in _subgraphs(node):
            _half_sequences(subgraph)
    for value in (*graph.value_info, *graph.input, *graph.output):
        element = value.type.sequence_type.elem_type.tensor_type
        if value.type.HasField("sequence_type") and element.elem_type == onnx.TensorProto.FLOAT:
            element.elem_type = onnx.TensorProto.FLOAT16


def _outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from its enclosing scopes (the blocked form's Loop body reads q, k, v)."""
    produced = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    read: set[str] = set()
    for node in graph.node:
        read.update(name for name in node.input if name)
        for subgraph in _subgraphs(node):
            read |= _outer_names(subgraph)
        produced.update(node.output)
    return read - produced


def _sort_with_outer_scope(graph: onnx.GraphProto) -> None:
    """Order nodes so that a Loop comes after the producers of what its body reads.

    The converter's own sort sees explicit inputs only; in a fixed-size export the Loop's trip
    count is a constant, so it could place the Loop before the q it slices.
    """
    nodes = list(graph.node)
    needs = []
    for node in nodes:
        names = {name for name in node.input if name}
        for subgraph in _subgraphs(node):
            names |= _outer_names(subgraph)
        needs.append(names)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    producers = {name for node in nodes for name in node.output}
    ordered: list[onnx.NodeProto] = []
    pending = list(range(len(nodes)))
    while pending:
        # Keeps the given order wherever it is already valid.
        deferred = []
        for i in pending:
            if all(name in available or name not in producers for name in needs[i]):
                ordered.append(nodes[i])
                available.update(nodes[i].output)
            else:
                deferred.append(i)
        if len(deferred) == len(pending):
            raise RuntimeError("the fp16 graph has a cycle")
        pending = deferred
    del graph.node[:]
    graph.node.extend(ordered)


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
