"""The native flavour of the Triton repository: SPD, SPGM and upsampling for a stock Triton without Python.

``write_native_repository(model_dir, out)`` writes, for an ``spgim export`` folder with the portable fp32 ONNX:

- ``spgim_spd``, ``spgim_spgm`` (and ``spgim_upsample`` where the export has the upsample graph): platform
  ``onnxruntime_onnx``, ``1/model.onnx`` a hard link (or copy) of the export's portable graph, whose attention is
  ONNX Runtime's built-in ``com.microsoft.MultiHeadAttention``;
- ``spgim_native``: an ``ensemble`` wiring them, ``image -> SPD -> (mask, r2, r3, r4) -> SPGM -> alpha`` and then
  ``(alpha, image, frame) -> upsample -> alpha_full``. The graphs take the working-size image (float32 NCHW RGB in
  [0, 1], the frame shrunk by the client) and, for the upsampling, the frame itself (uint8 NHWC RGB);
- with ``tensorrt``, ``spgim_spd_trt`` and ``spgim_spgm_trt``: platform ``tensorrt_plan`` configs and a README; their
  engines are built on the GPU machine that serves them.

Every tensor of every config (name, data type, dims, batching) comes from the graphs' own inputs and outputs (the
ONNX graph, refined by the sidecar where the graph leaves an axis symbolic); the ensemble's maps come from the
graphs' tensor names. Nothing is written by hand per model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError
from spgim.runtime.artifacts import (
    UPSAMPLE,
    Artifact,
    load_artifacts,
    select_pair,
    select_upsampler,
    verify_files,
)

from .config import TensorSpec, quoted

ENSEMBLE_NAME = "spgim_native"
ONNX_MODEL_NAMES = {"spd": "spgim_spd", "spgm": "spgim_spgm", UPSAMPLE: "spgim_upsample"}
TENSORRT_MODEL_NAMES = {"spd": "spgim_spd_trt", "spgm": "spgim_spgm_trt"}
MAX_BATCH_SIZE = 8
# spgim export builds its engines with a batch profile of (1, 1, 1); an engine's sidecar may say otherwise.
ENGINE_DEFAULT_MAX_BATCH = 1

# ONNX TensorProto element types and sidecar dtype names, as Triton data types.
ONNX_DATA_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}
SIDECAR_DATA_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "uint8": "TYPE_UINT8"}

TENSORRT_README = """\
{name}: the TensorRT flavour of {branch} ({precision}), for a Triton with a GPU and its tensorrt backend.

This folder holds the configuration only. The engine, 1/model.plan, must be built on the GPU machine that serves
it (an engine runs only on the GPU architecture and the TensorRT version it was built with):

    spgim export --spd SPD.pt --spgm SPGM.pt --out exported --formats onnx-trt,engine --precision {precision} \\
        --plugin build/native/libspgim_tst_plugin.so
    cp exported/{branch}.{precision}.engine {name}/1/model.plan

SPGM's engine holds TSTAttention plugin nodes: start the server with the plugin library loaded,

    tritonserver --model-repository=... --backend-config=tensorrt,plugins=/path/libspgim_tst_plugin.so

(or LD_PRELOAD=/path/libspgim_tst_plugin.so). Inputs and outputs are those of the ONNX graphs the engine is built
from; max_batch_size is the engine profile's largest batch ({max_batch}).
"""


@dataclass(frozen=True)
class GraphTensor:
    """One input or output of an exported graph: its name, Triton data type and full shape (-1: dynamic axis)."""

    name: str
    data_type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class GraphSignature:
    """The inputs and outputs of one exported graph, in the graph's order."""

    inputs: tuple[GraphTensor, ...]
    outputs: tuple[GraphTensor, ...]

    @property
    def batched(self) -> bool:
        """Whether every tensor's first axis is dynamic (the graph takes any batch: Triton may batch it)."""
        return all(t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs))


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble: a model and its maps (the model's tensor name -> the ensemble's tensor name)."""

    model_name: str
    input_map: tuple[tuple[str, str], ...]
    output_map: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class NativeModelSpec:
    """What a native model's ``config.pbtxt`` says (a platform rather than a backend; instances optional).

    Args:
        name: the model's folder in the repository.
        platform: ``"onnxruntime_onnx"``, ``"tensorrt_plan"`` or ``"ensemble"``.
        inputs, outputs: dims without the batch axis when ``max_batch_size`` > 0.
        max_batch_size: 0 where the graphs take a fixed batch.
        instance_kind: ``"KIND_CPU"``/``"KIND_GPU"``, or None for none (an ensemble has no instances).
        dynamic_batching: let the server gather requests (needs ``max_batch_size`` > 0).
        steps: an ensemble's steps, in order.
    """

    name: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0
    instance_kind: str | None = None
    dynamic_batching: bool = False
    steps: tuple[EnsembleStep, ...] = ()


def _onnx_shape(value_info: Any) -> tuple[tuple[int | None, ...], int]:
    """A graph value's axes (None where symbolic) and its ONNX element type."""
    tensor_type = value_info.type.tensor_type
    axes = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
    return axes, tensor_type.elem_type


def _sidecar_axis(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _merge_tensor(artifact: Artifact, value_info: Any, recorded: dict[str, Any]) -> GraphTensor:
    """One tensor from the graph, each symbolic axis refined by the sidecar's number where it records one."""
    name = value_info.name
    axes, element_type = _onnx_shape(value_info)
    data_type = ONNX_DATA_TYPES.get(element_type)
    if data_type is None:
        raise SpgimError(f"{artifact.path.name}: tensor {name!r} has ONNX type {element_type}, which Triton lacks")
    recorded_type = SIDECAR_DATA_TYPES.get(str(recorded.get("dtype")))
    if recorded_type is not None and recorded_type != data_type:
        raise SpgimError(
            f"{artifact.path.name}: tensor {name!r} is {data_type} in the graph, {recorded_type} in its sidecar"
        )
    recorded_shape = recorded.get("shape")
    if isinstance(recorded_shape, list) and len(recorded_shape) != len(axes):
        raise SpgimError(
            f"{artifact.path.name}: tensor {name!r} has rank {len(axes)} in the graph, "
            f"{len(recorded_shape)} in its sidecar"
        )
    shape = []
    for index, axis in enumerate(axes):
        noted = _sidecar_axis(recorded_shape[index]) if isinstance(recorded_shape, list) else None
        if axis is not None and noted is not None and axis != noted:
            raise SpgimError(
                f"{artifact.path.name}: tensor {name!r} axis {index} is {axis} in the graph, {noted} in its sidecar"
            )
        shape.append(axis if axis is not None else noted if noted is not None else -1)
    if not shape:
        raise SpgimError(f"{artifact.path.name}: tensor {name!r} is a scalar; Triton's configs need a shape")
    return GraphTensor(name, data_type, tuple(shape))


def graph_signature(artifact: Artifact) -> GraphSignature:
    """The inputs and outputs of an ONNX artifact: its graph's, checked against (and refined by) its sidecar."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        graph = onnx.load(str(artifact.path), load_external_data=False).graph
    except (OSError, ValueError, DecodeError) as error:
        raise SpgimError(f"{artifact.path} is not a readable ONNX graph: {error}") from None
    initialisers = {i.name for i in graph.initializer}
    graph_inputs = [v for v in graph.input if v.name not in initialisers]

    def side(kind: str, values: Sequence[Any]) -> tuple[GraphTensor, ...]:
        recorded = artifact.sidecar.get(kind, [])
        names = [v.name for v in values]
        recorded_names = [r.get("name") for r in recorded]
        if recorded and recorded_names != names:
            raise SpgimError(f"{artifact.path.name}: the graph's {kind} are {names}, its sidecar's {recorded_names}")
        return tuple(_merge_tensor(artifact, v, recorded[i] if recorded else {}) for i, v in enumerate(values))

    return GraphSignature(side("inputs", graph_inputs), side("outputs", list(graph.output)))


def _config_tensors(tensors: Sequence[GraphTensor], batched: bool) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, t.data_type, t.shape[1:] if batched else t.shape) for t in tensors)


def graph_model_spec(
    name: str, platform: str, signature: GraphSignature, *, max_batch_size: int, instance_kind: str
) -> NativeModelSpec:
    """The config of one graph served by ``platform``; the batch axis goes to ``max_batch_size`` where it is dynamic."""
    batched = signature.batched and max_batch_size > 0
    return NativeModelSpec(
        name=name,
        platform=platform,
        inputs=_config_tensors(signature.inputs, batched),
        outputs=_config_tensors(signature.outputs, batched),
        max_batch_size=max_batch_size if batched else 0,
        instance_kind=instance_kind,
        dynamic_batching=batched,
    )


def _joined_dims(name: str, first: tuple[int, ...], second: tuple[int, ...]) -> tuple[int, ...]:
    """The dims two ends of one ensemble tensor agree on (-1 meets anything); one line where they cannot."""
    if len(first) != len(second) or any(a != b and -1 not in (a, b) for a, b in zip(first, second, strict=True)):
        raise SpgimError(f"ensemble tensor {name!r}: dims {list(first)} and {list(second)} do not fit together")
    return tuple(b if a == -1 else a for a, b in zip(first, second, strict=True))


def ensemble_spec(name: str, chain: Sequence[tuple[NativeModelSpec, bool]], *, max_batch_size: int) -> NativeModelSpec:
    """An ensemble running ``chain``'s models in order, each input fed by name.

    An input of a step takes the output of the same name of the latest earlier step, else the ensemble's input of
    that name (one ensemble input can feed several steps). The outputs of the steps flagged True in ``chain`` are the
    ensemble's outputs.
    """
    batch_sizes = {model.max_batch_size for model, _ in chain}
    if len({size > 0 for size in batch_sizes}) > 1:
        raise SpgimError(
            "the graphs disagree on batching (some take any batch, some a fixed one): export them together"
        )
    produced: dict[str, TensorSpec] = {}
    inputs: dict[str, TensorSpec] = {}
    outputs: list[TensorSpec] = []
    steps = []
    for model, exposed in chain:
        for tensor in model.inputs:
            source = produced.get(tensor.name) or inputs.get(tensor.name)
            if source is not None and source.data_type != tensor.data_type:
                raise SpgimError(
                    f"ensemble tensor {tensor.name!r}: {model.name} takes {tensor.data_type}, it is {source.data_type}"
                )
            dims = _joined_dims(tensor.name, source.dims, tensor.dims) if source is not None else tensor.dims
            if tensor.name in produced:
                produced[tensor.name] = TensorSpec(tensor.name, tensor.data_type, dims)
            else:
                inputs[tensor.name] = TensorSpec(tensor.name, tensor.data_type, dims)
        for tensor in model.outputs:
            if tensor.name in inputs:
                raise SpgimError(
                    f"ensemble tensor {tensor.name!r} is both an input of the ensemble and {model.name}'s output"
                )
            produced[tensor.name] = tensor
        if exposed:
            outputs += model.outputs
        steps.append(
            EnsembleStep(
                model.name,
                tuple((t.name, t.name) for t in model.inputs),
                tuple((t.name, t.name) for t in model.outputs),
            )
        )
    batched = min(batch_sizes) > 0
    return NativeModelSpec(
        name=name,
        platform="ensemble",
        inputs=tuple(inputs.values()),
        outputs=tuple(produced[t.name] for t in outputs),
        max_batch_size=min(max_batch_size, *batch_sizes) if batched else 0,
        steps=tuple(steps),
    )


def _tensor_lines(field_name: str, tensors: Sequence[TensorSpec]) -> list[str]:
    blocks = [
        f"  {{ name: {quoted(t.name)}, data_type: {t.data_type}, dims: [ {', '.join(str(d) for d in t.dims)} ] }}"
        for t in tensors
    ]
    return [f"{field_name} [", ",\n".join(blocks), "]"]


def _map_lines(field_name: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    return [f"    {field_name} {{ key: {quoted(key)} value: {quoted(value)} }}" for key, value in pairs]


def render_native_config(spec: NativeModelSpec) -> str:
    """The ``config.pbtxt`` text of ``spec`` (protobuf text format, as ``model_config_pb2.ModelConfig`` parses it)."""
    lines = [
        f"name: {quoted(spec.name)}",
        f"platform: {quoted(spec.platform)}",
        f"max_batch_size: {spec.max_batch_size}",
        *_tensor_lines("input", spec.inputs),
        *_tensor_lines("output", spec.outputs),
    ]
    if spec.instance_kind is not None:
        lines.append(f"instance_group [ {{ kind: {spec.instance_kind}, count: 1 }} ]")
    if spec.dynamic_batching:
        lines.append("dynamic_batching { }")
    if spec.steps:
        lines.append("ensemble_scheduling {")
        for step in spec.steps:
            lines += [
                "  step {",
                f"    model_name: {quoted(step.model_name)}",
                "    model_version: -1",
                *_map_lines("input_map", step.input_map),
                *_map_lines("output_map", step.output_map),
                "  }",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"


def _write_model(out: Path, spec: NativeModelSpec) -> Path:
    folder = out / spec.name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(render_native_config(spec), encoding="utf-8")
    return folder


def _place_graph(artifact: Artifact, target: Path) -> None:
    """``target`` as a hard link to the artifact (a copy across file systems), checked against its sha256 first."""
    verify_files(artifact)
    target.unlink(missing_ok=True)
    try:
        os.link(artifact.path, target)
    except OSError:
        shutil.copyfile(artifact.path, target)


def engine_max_batch(artifacts: Sequence[Artifact], branch: str) -> int:
    """The largest batch of the branch's engine profile where an engine's sidecar records one, else spgim's default."""
    for artifact in artifacts:
        profile = artifact.sidecar.get("optimization_profile") if artifact.branch == branch else None
        if artifact.format == "engine" and isinstance(profile, dict) and profile:
            try:
                return min(int(shapes[2][0]) for shapes in profile.values())
            except (TypeError, ValueError, IndexError, KeyError):
                continue
    return ENGINE_DEFAULT_MAX_BATCH


def write_native_repository(
    model_dir: Path, out: Path, *, max_batch_size: int = MAX_BATCH_SIZE, tensorrt: bool = True
) -> list[Path]:
    """Write the native models of ``model_dir`` (an ``spgim export`` folder with fp32 ONNX) into ``out``.

    Returns the model folders written: the ONNX Runtime models, the ``spgim_native`` ensemble and, with
    ``tensorrt``, the ``tensorrt_plan`` configs (whose ``1/model.plan`` is built on the serving GPU: see their
    README.txt). Other models in ``out`` are left alone.
    """
    if max_batch_size < 0:
        raise SpgimError(f"max_batch_size must be at least 0, got {max_batch_size}")
    model_dir, out = Path(model_dir), Path(out)
    artifacts = load_artifacts(model_dir)
    graphs: dict[str, Artifact] = dict(zip(("spd", "spgm"), select_pair(artifacts, "onnx", "fp32"), strict=True))
    upsampler = select_upsampler(artifacts, "onnx")
    if upsampler is not None:
        graphs[UPSAMPLE] = upsampler
    signatures = {branch: graph_signature(artifact) for branch, artifact in graphs.items()}
    onnx_specs = {
        branch: graph_model_spec(
            ONNX_MODEL_NAMES[branch],
            "onnxruntime_onnx",
            signature,
            max_batch_size=max_batch_size,
            instance_kind="KIND_CPU",
        )
        for branch, signature in signatures.items()
    }
    chain = [(onnx_specs["spd"], False), (onnx_specs["spgm"], True)]
    if UPSAMPLE in onnx_specs:
        chain.append((onnx_specs[UPSAMPLE], True))
    ensemble = ensemble_spec(ENSEMBLE_NAME, chain, max_batch_size=max_batch_size)
    written = []
    try:
        for branch, spec in onnx_specs.items():
            folder = _write_model(out, spec)
            _place_graph(graphs[branch], folder / "1" / "model.onnx")
            written.append(folder)
        written.append(_write_model(out, ensemble))
        if tensorrt:
            for branch, name in TENSORRT_MODEL_NAMES.items():
                largest = min(max_batch_size, engine_max_batch(artifacts, branch))
                spec = graph_model_spec(
                    name, "tensorrt_plan", signatures[branch], max_batch_size=largest, instance_kind="KIND_GPU"
                )
                folder = _write_model(out, spec)
                readme = TENSORRT_README.format(
                    name=name, branch=branch, precision="fp32", max_batch=spec.max_batch_size
                )
                (folder / "README.txt").write_text(readme, encoding="utf-8")
                written.append(folder)
    except OSError as error:
        raise SpgimError(f"cannot write the native model repository {out}: {error.strerror or error}") from None
    return written
