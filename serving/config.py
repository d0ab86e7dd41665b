"""Triton ``config.pbtxt`` text rendered from a small description of a model (:class:`ModelSpec`).

One renderer for every model of a repository: the description names the model, its backend, its
tensors (name, Triton data type, dims without the batch axis), batching, instances and string
parameters; :func:`render_config` writes protobuf text format that ``tritonserver`` (and
``tritonclient.grpc.model_config_pb2.ModelConfig`` through ``google.protobuf.text_format``) parses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from spgim.errors import SpgimError

# Triton's data types (model_config.proto DataType), less TYPE_INVALID.
DATA_TYPES = frozenset(
    {
        "TYPE_BOOL",
        "TYPE_UINT8",
        "TYPE_UINT16",
        "TYPE_UINT32",
        "TYPE_UINT64",
        "TYPE_INT8",
        "TYPE_INT16",
        "TYPE_INT32",
        "TYPE_INT64",
        "TYPE_FP16",
        "TYPE_FP32",
        "TYPE_FP64",
        "TYPE_STRING",
        "TYPE_BF16",
    }
)
INSTANCE_KINDS = frozenset({"KIND_AUTO", "KIND_CPU", "KIND_GPU", "KIND_MODEL"})


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model.

    Args:
        name: the tensor's name in requests and responses.
        data_type: a Triton data type, e.g. ``"TYPE_UINT8"``.
        dims: the shape without the batch axis (when the model batches); -1 for a variable dimension.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.data_type not in DATA_TYPES:
            raise SpgimError(f"tensor {self.name!r}: unknown Triton data type {self.data_type!r}")
        if not self.dims or any(d == 0 or d < -1 for d in self.dims):
            raise SpgimError(f"tensor {self.name!r}: dims must be positive or -1, got {list(self.dims)}")


@dataclass(frozen=True)
class ModelSpec:
    """What a model's ``config.pbtxt`` says.

    Args:
        name: the model's name (its folder in the repository).
        backend: the Triton backend, e.g. ``"python"`` or ``"onnxruntime"``.
        inputs, outputs: the model's tensors.
        max_batch_size: the largest batch the server forms (0: the model does not batch; dims are full shapes).
        dynamic_batching: let the server gather requests into batches (needs ``max_batch_size`` > 0).
        instance_kind: where instances run (``"KIND_CPU"``, ``"KIND_GPU"``, ...).
        instance_count: how many instances the server runs.
        parameters: string parameters handed to the model (the Python backend reads them in ``initialize``).
    """

    name: str
    backend: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    dynamic_batching: bool = False
    instance_kind: str = "KIND_CPU"
    instance_count: int = 1
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise SpgimError(f"model {self.name!r}: max_batch_size must be at least 0, got {self.max_batch_size}")
        if self.dynamic_batching and self.max_batch_size == 0:
            raise SpgimError(f"model {self.name!r}: dynamic batching needs max_batch_size above 0")
        if self.instance_kind not in INSTANCE_KINDS:
            raise SpgimError(f"model {self.name!r}: unknown instance kind {self.instance_kind!r}")
        if self.instance_count < 1:
            raise SpgimError(f"model {self.name!r}: instance count must be at least 1, got {self.instance_count}")


def quoted(text: str) -> str:
    """``text`` as a protobuf text-format string literal (UTF-8, non-ASCII and control bytes as octal escapes)."""
    escaped = []
    for byte in text.encode("utf-8"):
        if byte in (0x22, 0x5C):  # " and \
            escaped.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            escaped.append(chr(byte))
        else:
            escaped.append(f"\\{byte:03o}")
    return '"' + "".join(escaped) + '"'


def _tensor_block(tensor: TensorSpec) -> list[str]:
    dims = ", ".join(str(d) for d in tensor.dims)
    return [
        "  {",
        f"    name: {quoted(tensor.name)}",
        f"    data_type: {tensor.data_type}",
        f"    dims: [ {dims} ]",
        "  }",
    ]


def _tensor_list(field_name: str, tensors: tuple[TensorSpec, ...]) -> list[str]:
    blocks = [_tensor_block(t) for t in tensors]
    lines = [f"{field_name} ["]
    for index, block in enumerate(blocks):
        if index < len(blocks) - 1:
            block = [*block[:-1], "  },"]
        lines += block
    return [*lines, "]"]


def render_config(spec: ModelSpec) -> str:
    """The ``config.pbtxt`` text of ``spec``."""
    lines = [
        f"name: {quoted(spec.name)}",
        f"backend: {quoted(spec.backend)}",
        f"max_batch_size: {spec.max_batch_size}",
        *_tensor_list("input", spec.inputs),
        *_tensor_list("output", spec.outputs),
        "instance_group [",
        "  {",
        f"    kind: {spec.instance_kind}",
        f"    count: {spec.instance_count}",
        "  }",
        "]",
    ]
    if spec.dynamic_batching:
        lines.append("dynamic_batching { }")
    for key, value in spec.parameters.items():
        lines += ["parameters {", f"  key: {quoted(key)}", f"  value: {{ string_value: {quoted(value)} }}", "}"]
    return "\n".join(lines) + "\n"
