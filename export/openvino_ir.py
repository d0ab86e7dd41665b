"""Portable ONNX -> OpenVINO IR (``.xml`` graph + ``.bin`` weights beside it), weights kept fp32.

The runtime's OpenVINO backend reads the ONNX files too; IR only saves it the ONNX import at
start-up. Precision is chosen at compile time (``INFERENCE_PRECISION_HINT``), not stored here,
which is why the weights are not compressed to fp16.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from spgim.errors import SpgimError
from spgim.telemetry_consent import decline_unasked_telemetry

OPENVINO_PIN = "openvino==2026.4.1"


def export_openvino_ir(onnx_path: Path, xml_path: Path) -> None:
    """Convert a portable ONNX graph to OpenVINO IR at ``xml_path`` (and ``xml_path.with_suffix(".bin")``).

    Args:
        onnx_path: a portable (standard-ops) ONNX graph of SPD or SPGM.
        xml_path: where the IR graph goes; its weights are written beside it as ``.bin``.

    Raises:
        SpgimError: openvino is not installed, or the ONNX file is unreadable or not convertible.
    """
    try:
        import openvino
    except (ImportError, OSError):
        raise SpgimError(f"exporting OpenVINO IR needs openvino: pip install {OPENVINO_PIN}") from None
    # A file that is not ONNX would send convert_model through every other frontend (TensorFlow's
    # text parser logs each attempt); refuse it here with the ONNX parser's own reason.
    try:
        onnx.load(str(onnx_path), load_external_data=False)
    except (OSError, DecodeError) as error:
        raise SpgimError(f"{onnx_path} is not a readable ONNX graph: {_one_line(error)}") from None
    decline_unasked_telemetry()  # convert_model reports usage unless told not to
    try:
        model = openvino.convert_model(str(onnx_path))
        xml_path.parent.mkdir(parents=True, exist_ok=True)
        openvino.save_model(model, str(xml_path), compress_to_fp16=False)
    except Exception as error:  # the converter raises its own error types, and RuntimeError from C++
        raise SpgimError(f"OpenVINO cannot convert {onnx_path.name}: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines or [type(error).__name__])[0][:200]
