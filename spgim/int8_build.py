"""INT8 post-training quantization of one ONNX graph by ONNX Runtime or NNCF, shared by the exporter and the runtime.

``spgim export --precision int8`` quantizes SPD and SPGM with :data:`QUANTIZERS`; ``spgim bench`` quantizes its
ResNet-50 ceiling with the same functions, so that an int8 row's model and ceiling are quantized the same way.
Neither imports the other; ONNX Runtime, ONNX, NNCF and OpenVINO are imported when a quantization starts.

- ``onnx``: ONNX Runtime's static quantization in QDQ form (``onnxruntime.quantization.quantize_static``): uint8
  activations with ranges from the calibration feeds' 99.99th percentiles, int8 weights per output channel;
- ``openvino``: NNCF's post-training quantization of the OpenVINO model (``nncf.quantize``), saved as IR;
- ``onnx-trt``: TensorRT's explicit quantization, a QDQ graph TensorRT builds into an int8 engine
  (:func:`quantize_tensorrt`): symmetric int8 activations and weights, Q/DQ on the inputs of the weighted
  operations only, the ``TSTAttention`` plugin nodes kept in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from spgim.errors import SpgimError
from spgim.telemetry_consent import decline_unasked_telemetry

NNCF_PIN = "nncf==3.4.0"
ENGINES = {
    "onnx": "onnxruntime QDQ static quantization",
    "openvino": "NNCF post-training quantization",
    "onnx-trt": "onnxruntime QDQ static quantization for TensorRT (symmetric int8, explicit quantization)",
}
# The operations TensorRT's explicit quantization wants Q/DQ in front of: the weighted ones. TensorRT fuses each
# DequantizeLinear into the operation after it and moves quantization across the others itself.
TENSORRT_QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
MHA_DOMAIN = "com.microsoft"


def matching(names: list[str], patterns: tuple[str, ...]) -> list[str]:
    """The ``names`` that one of the regular expressions ``patterns`` finds."""
    return [name for name in names if any(re.search(pattern, name) for pattern in patterns)]


class _Feeds:
    """ONNX Runtime's calibration reader over a list of feeds (its ``get_next`` protocol, and ``set_range`` for
    calibrating a few feeds at a time)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._all = feeds
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # part of ORT's CalibrationDataReader interface; one pass is all it takes here
        pass

    def __len__(self) -> int:
        return len(self._all)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feeds = iter(self._all[start_index:end_index])


def quantize_onnx(
    source: Path,
    target: Path,
    feeds: list[dict[str, np.ndarray]],
    patterns: tuple[str, ...],
    *,
    for_tensorrt: bool = False,
) -> list[str]:
    """QDQ static quantization of ``source`` to ``target``, calibrated (percentiles) on ``feeds``; the nodes that
    ``patterns`` find stay in float. Returns their names.

    The graph is pre-processed first (ONNX Runtime's ``quant_pre_process``: shape inference and graph cleaning), as
    its documentation asks: without it the QDQ pairs do not fuse into integer kernels, and ResNet-50 at 320x192 ran
    97 ms in int8 against 49 ms in fp32; with it, 17 ms.

    ``for_tensorrt``: the form TensorRT's explicit quantization takes (:data:`TENSORRT_QUANTIZED_OPS`, int8
    activations symmetric about zero: TensorRT has no zero points); otherwise ONNX Runtime's best on the CPU.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Feeds, CalibrationDataReader):
        pass

    # Its sessions' graph-cleaning warnings and its advice come once per node or call: errors only.
    onnxruntime.set_default_logger_severity(3)
    try:
        with tempfile.TemporaryDirectory(dir=target.parent) as folder, _only_errors_logged():
            prepared = Path(folder) / "prepared.onnx"
            # ONNX shape inference and the optimizer; the symbolic pass ORT adds for transformers cannot follow
            # SPGM's dynamic graph ("Incomplete symbolic shape inference") and is not needed for the fusion.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            graph = onnx.load(str(prepared), load_external_data=False).graph
            keep = matching([node.name for node in graph.node], patterns)
            quantize_static(
                str(prepared),
                str(target),
                Reader(feeds),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=keep,
                op_types_to_quantize=list(TENSORRT_QUANTIZED_OPS) if for_tensorrt else None,
                # The 99.99th percentile of each activation, not its extremes: on the live pair with 200 images the
                # alpha error was 0.0074 against min/max's 0.0141 (SPGM's decoder levels in float both times).
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={
                    # One feed's intermediate tensors at a time, its histograms merged into the others': ONNX Runtime
                    # otherwise holds every feed's before it bins them (the paper pair at 512x512 with 16 images
                    # ran out of 24 GB).
                    "CalibStridedMinMax": 1,
                    "CalibPercentile": 99.99,
                    "CalibTensorRangeSymmetric": for_tensorrt,
                    "ActivationSymmetric": for_tensorrt,
                    "WeightSymmetric": True,
                    # TensorRT takes a weighted operation's bias in float and quantizes it itself.
                    "QuantizeBias": not for_tensorrt,
                    # Q/DQ in front of TensorRT's weighted operations only, not on what they give.
                    "OpTypesToExcludeOutputQuantization": list(TENSORRT_QUANTIZED_OPS) if for_tensorrt else [],
                },
                calibration_providers=["CPUExecutionProvider"],
                # ORT writes its augmented calibration graph to a folder of its choosing; keep it in the scratch one
                **_augmented_path(folder),
            )
    finally:
        onnxruntime.set_default_logger_severity(2)  # its default, warnings
    return keep


def quantize_tensorrt(
    source: Path, target: Path, feeds: list[dict[str, np.ndarray]], patterns: tuple[str, ...]
) -> list[str]:
    """The QDQ graph TensorRT builds an int8 engine from (explicit quantization), from a TensorRT-flavour or portable
    fp32 graph ``source``; the nodes that ``patterns`` find stay in float. Returns their names.

    ONNX Runtime calibrates the graph, so each ``TSTAttention`` plugin node is run as the equivalent one-head
    ``com.microsoft::MultiHeadAttention`` node while it does (same q, k, v and scale), and put back after: the
    attention stays in float, and the file TensorRT reads has the plugin node where the fp32 graph had it.

    Raises:
        SpgimError: a quantization parameter TensorRT cannot take (a zero point other than 0, a type other than int8).
    """
    import onnx

    from .tst_op import ONNX_DOMAIN, PLUGIN_NAME, SCALE_FIELD

    model = onnx.load(str(source))
    plugins: dict[str, onnx.NodeProto] = {}  # by output name: the ORT optimizer keeps tensor names, not node names
    for node in model.graph.node:
        if node.op_type == PLUGIN_NAME:
            plugins[node.output[0]] = _copy(node)
            scale = next(a.f for a in node.attribute if a.name == SCALE_FIELD)
            del node.attribute[:]
            node.op_type, node.domain = "MultiHeadAttention", MHA_DOMAIN
            node.attribute.extend(
                [onnx.helper.make_attribute("num_heads", 1), onnx.helper.make_attribute("scale", scale)]
            )
    if plugins and not any(entry.domain == MHA_DOMAIN for entry in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MHA_DOMAIN, 1))
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        calibrated = Path(folder) / "calibrated.onnx"
        onnx.save(model, str(calibrated))
        keep = quantize_onnx(calibrated, target, feeds, patterns, for_tensorrt=True)
    quantized = onnx.load(str(target))
    restored = 0
    for node in quantized.graph.node:
        original = plugins.get(node.output[0]) if node.op_type == "MultiHeadAttention" else None
        if original is not None:
            node.op_type, node.domain = original.op_type, original.domain or ONNX_DOMAIN
            del node.attribute[:]
            node.attribute.extend(original.attribute)
            restored += 1
    assert restored == len(plugins), f"{restored} of {len(plugins)} TSTAttention nodes came back"
    # Only the domains its nodes use (the default one always): ONNX Runtime's optimizer lists every domain it knows.
    used = {"", *(node.domain for node in quantized.graph.node)}
    kept = [entry for entry in quantized.opset_import if entry.domain in used]
    del quantized.opset_import[:]
    quantized.opset_import.extend(kept)
    _check_tensorrt_qdq(quantized)
    onnx.save(quantized, str(target))
    return keep


def _copy(node: Any) -> Any:
    import onnx

    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


def _check_tensorrt_qdq(model: Any) -> None:
    """Every Q/DQ node's zero point is an int8 zero (TensorRT quantizes symmetrically, in int8 only)."""
    import onnx
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zero = initializers.get(node.input[2])
        if zero is None or zero.data_type != onnx.TensorProto.INT8 or numpy_helper.to_array(zero).any():
            raise SpgimError(f"{node.name}: TensorRT takes int8 quantization with zero points of 0 only")


@contextlib.contextmanager
def _only_errors_logged() -> Iterator[None]:
    """Python's root logger at ERROR for the duration (the quantizers log their progress and advice there), and
    their prints kept off standard output (ONNX Runtime's histogram calibration prints its tensor and bin counts)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _augmented_path(folder: str) -> dict[str, Any]:
    """Where quantize_static may put its augmented graph, where this version of ONNX Runtime takes the option."""
    import inspect

    from onnxruntime.quantization import quantize_static

    if "augmented_model_path" in inspect.signature(quantize_static).parameters:
        return {"augmented_model_path": str(Path(folder) / "augmented.onnx")}
    return {}


def quantize_openvino(
    source: Path, target: Path, feeds: list[dict[str, np.ndarray]], patterns: tuple[str, ...]
) -> list[str]:
    """NNCF post-training quantization of the ONNX graph ``source`` to OpenVINO IR ``target`` (and its .bin); the
    operations that ``patterns`` find (OpenVINO keeps the ONNX node names, with suffixes) stay in float. Returns
    their names."""
    decline_unasked_telemetry()  # before NNCF's import: it sets up its usage reporting there
    try:
        import nncf
    except ImportError:
        raise SpgimError(f"an openvino int8 export needs NNCF: pip install {NNCF_PIN}") from None
    import openvino

    model = openvino.convert_model(str(source))
    keep = matching([op.get_friendly_name() for op in model.get_ordered_ops()], patterns)
    nncf.set_log_level(logging.ERROR)
    with _only_errors_logged():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(feeds),
            subset_size=len(feeds),
            # Asymmetric activations: SPG-IM's activations are not centred on zero (images, masks, alphas in [0, 1]);
            # on the live pair the symmetric default's alpha error was 0.025 against 0.019 (docs/export.md, "INT8").
            preset=nncf.QuantizationPreset.MIXED,
            ignored_scope=nncf.IgnoredScope(names=keep, validate=False) if keep else None,
        )
    openvino.save_model(quantized, str(target), compress_to_fp16=False)
    return keep


Quantizer = Callable[[Path, Path, list[dict[str, np.ndarray]], tuple[str, ...]], list[str]]
QUANTIZERS: dict[str, Quantizer] = {"onnx": quantize_onnx, "openvino": quantize_openvino, "onnx-trt": quantize_tensorrt}
