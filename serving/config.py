"""Triton ``config.pbtxt`` text rendered from a small description of a model (:class:`ModelSpec`).

One renderer for every model of a repository: the description names the model, its backend, its
tensors (name, Triton data type, dims without the batch axis), batching (dynamic, or sequence batching
with its control inputs, :class:`SequenceBatching`), instances and string parameters;
:func:`render_config` writes protobuf text format that ``tritonserver`` (and
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
# Sequence-batcher controls (model_config.proto ModelSequenceBatching.Control.Kind): the flags take
# ``int32_false_true``, the correlation id a data type.
FLAG_CONTROLS = frozenset({"CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_READY"})
CORRID_CONTROL = "CONTROL_SEQUENCE_CORRID"
CORRID_TYPES = frozenset({"TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING"})
SEQUENCE_STRATEGIES = frozenset({"oldest", "direct"})


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
class SequenceControl:
    """One control input of the sequence batcher: a tensor the server fills in for each request.

    Args:
        name: the input's name as the model reads it (e.g. ``"START"``).
        kind: ``CONTROL_SEQUENCE_START``, ``_END``, ``_READY`` (int32 0/1 flags) or ``_CORRID``.
        data_type: the correlation id's Triton data type (``CONTROL_SEQUENCE_CORRID`` only).
    """

    name: str
    kind: str
    data_type: str | None = None

    def __post_init__(self) -> None:
        if self.kind == CORRID_CONTROL:
            if self.data_type not in CORRID_TYPES:
                raise SpgimError(f"control {self.name!r}: a correlation id cannot be {self.data_type!r}")
        elif self.kind not in FLAG_CONTROLS:
            raise SpgimError(f"control {self.name!r}: unknown control kind {self.kind!r}")
        elif self.data_type is not None:
            raise SpgimError(f"control {self.name!r}: {self.kind} is an int32 flag and takes no data type")


@dataclass(frozen=True)
class SequenceBatching:
    """The ``sequence_batching`` block: requests of one sequence go to one instance, in order.

    Args:
        controls: the control inputs the model reads.
        max_sequence_idle_microseconds: a sequence with no request for this long is dropped by the server.
        strategy: ``"oldest"`` (batches of the oldest requests of different sequences, at most one of each)
            or ``"direct"`` (each sequence owns a batch slot).
        max_candidate_sequences: sequences the oldest strategy batches from (oldest only).
        max_queue_delay_microseconds: how long a batch may wait for more sequences' requests.
    """

    controls: tuple[SequenceControl, ...]
    max_sequence_idle_microseconds: int
    strategy: str = "oldest"
    max_candidate_sequences: int = 8
    max_queue_delay_microseconds: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in SEQUENCE_STRATEGIES:
            raise SpgimError(f"unknown sequence batching strategy {self.strategy!r}; choose oldest or direct")
        if self.max_sequence_idle_microseconds < 1:
            raise SpgimError(f"the sequence idle timeout must be positive, got {self.max_sequence_idle_microseconds}")
        if self.max_candidate_sequences < 1 or self.max_queue_delay_microseconds < 0:
            raise SpgimError("candidate sequences must be at least 1 and the queue delay at least 0")
        names = [control.name for control in self.controls]
        if len(set(names)) != len(names):
            raise SpgimError(f"control input names repeat: {', '.join(names)}")


@dataclass(frozen=True)
class ModelSpec:
    """What a model's ``config.pbtxt`` says.

    Args:
        name: the model's name (its folder in the repository).
        backend: the Triton backend, e.g. ``"python"`` or ``"onnxruntime"``.
        inputs, outputs: the model's tensors.
        max_batch_size: the largest batch the server forms (0: the model does not batch; dims are full shapes).
        dynamic_batching: let the server gather requests into batches (needs ``max_batch_size`` > 0).
        sequence_batching: stateful serving, each request part of a sequence (exclusive with dynamic batching).
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
    sequence_batching: SequenceBatching | None = None
    instance_kind: str = "KIND_CPU"
    instance_count: int = 1
    parameters: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise SpgimError(f"model {self.name!r}: max_batch_size must be at least 0, got {self.max_batch_size}")
        if self.dynamic_batching and self.max_batch_size == 0:
            raise SpgimError(f"model {self.name!r}: dynamic batching needs max_batch_size above 0")
        if self.dynamic_batching and self.sequence_batching is not None:
            raise SpgimError(f"model {self.name!r}: dynamic and sequence batching exclude each other")
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
    if spec.sequence_batching is not None:
        lines += _sequence_block(spec.sequence_batching)
    for key, value in spec.parameters.items():
        lines += ["parameters {", f"  key: {quoted(key)}", f"  value: {{ string_value: {quoted(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def _control_block(control: SequenceControl) -> list[str]:
    if control.kind == CORRID_CONTROL:
        body = f"kind: {control.kind} data_type: {control.data_type}"
    else:
        body = f"kind: {control.kind} int32_false_true: [ 0, 1 ]"
    return ["    {", f"      name: {quoted(control.name)}", f"      control [ {{ {body} }} ]", "    }"]


def _sequence_block(batching: SequenceBatching) -> list[str]:
    lines = ["sequence_batching {", f"  max_sequence_idle_microseconds: {batching.max_sequence_idle_microseconds}"]
    blocks = [_control_block(control) for control in batching.controls]
    if blocks:
        lines.append("  control_input [")
        for index, block in enumerate(blocks):
            lines += block if index == len(blocks) - 1 else [*block[:-1], "    },"]
        lines.append("  ]")
    if batching.strategy == "oldest":
        lines += [
            "  oldest {",
            f"    max_candidate_sequences: {batching.max_candidate_sequences}",
            f"    max_queue_delay_microseconds: {batching.max_queue_delay_microseconds}",
            "  }",
        ]
    else:
        lines.append(f"  direct {{ max_queue_delay_microseconds: {batching.max_queue_delay_microseconds} }}")
    return [*lines, "}"]
