"""The CPU twin of the TensorRT plugin: TensorRT-flavour ONNX graphs in ONNX Runtime on the CPU.

Each ``TSTAttention`` node runs through an ONNX Runtime Extensions Python custom op backed by the
C++ reference (:mod:`spgim.tst_reference`), so the exact graph TensorRT will parse is tested
where no GPU is present. ONNX Runtime Extensions' Python ops take float32 only: for an fp16
graph the twin wraps each plugin node in Casts to float32 and back, in memory; the file and its
node are untouched, and the reference's own fp16 path is tested directly instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .tst_op import ONNX_DOMAIN, PLUGIN_NAME, SCALE_FIELD

_REGISTERED = False


def _register_custom_op() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    from .tst_reference import attention

    @onnx_op(
        op_type=PLUGIN_NAME,
        inputs=[PyCustomOpDef.dt_float] * 3,
        outputs=[PyCustomOpDef.dt_float],
        attrs={SCALE_FIELD: PyCustomOpDef.dt_float, "plugin_version": PyCustomOpDef.dt_string},
    )
    def tst_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, **attributes: Any) -> np.ndarray:
        return attention(
            np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v), float(attributes[SCALE_FIELD])
        )

    _REGISTERED = True


def _cast_fp16_plugin_nodes(model: Any) -> Any:
    """Wrap fp16 ``TSTAttention`` nodes in float32 Casts (the Python custom op API has no fp16)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type != PLUGIN_NAME or types.get(node.input[0]) != onnx.TensorProto.FLOAT16:
            nodes.append(node)
            continue
        inputs: list[str] = []
        for name in node.input:
            cast = f"{node.name or name}_twin_fp32_{len(inputs)}"
            nodes.append(onnx.helper.make_node("Cast", [name], [cast], to=onnx.TensorProto.FLOAT))
            inputs.append(cast)
        output = node.output[0]
        wide = f"{output}_twin_fp32"
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        del copy.input[:]
        copy.input.extend(inputs)
        copy.output[0] = wide
        nodes.append(copy)
        nodes.append(onnx.helper.make_node("Cast", [wide], [output], to=onnx.TensorProto.FLOAT16))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def twin_session(path: str | os.PathLike[str], *, threads: int = 0, spinning: bool = True) -> Any:
    """An ONNX Runtime CPU session for any spgim ONNX graph, plugin nodes included.

    Args:
        path: a portable or TensorRT-flavour ONNX file, fp32 or fp16.
        threads: intra-op threads (0: ONNX Runtime's default).
        spinning: let idle intra-op threads spin (faster alone, slower beside other busy threads).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    # A graph whose bytes never spell the op type has no plugin node: it skips the 4 s of importing onnx
    # and ONNX Runtime Extensions (which imports torch), a third of a small `spgim matte` run.
    if PLUGIN_NAME.encode() not in Path(path).read_bytes():
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    import onnx
    from onnxruntime_extensions import get_library_path

    model = onnx.load(str(Path(path)))
    if any(n.op_type == PLUGIN_NAME for n in model.graph.node):
        if any(n.op_type == PLUGIN_NAME and n.domain != ONNX_DOMAIN for n in model.graph.node):
            raise ValueError(f"{path}: TSTAttention nodes must be in the {ONNX_DOMAIN} domain to run on the CPU twin")
        _register_custom_op()
        options.register_custom_ops_library(get_library_path())
        model = _cast_fp16_plugin_nodes(model)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
