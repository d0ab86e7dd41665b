"""A Triton model repository for an ``spgim export`` folder.

``write_repository(model_dir, out)`` writes two models, each a ``config.pbtxt`` (rendered from a
:class:`.config.ModelSpec`) and a generic ``1/model.py`` (copied):

- ``spgim`` (:mod:`.triton_model`): stateless, uint8 ``(N, H, W, 3)`` RGB frames into float32 ``(N, H, W)``
  alpha with :class:`spgim.runtime.matting.Matter`, SPD on every frame, dynamic batching;
- ``spgim_live`` (:mod:`.triton_live_model`): the keyframed stream path, one frame per request of a Triton
  sequence, a keyframe scheduler per sequence, sequence batching (see :func:`live_model_spec`).

The export folder and the options travel as the configs' parameters; nothing about them is written into
the models' code.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

from spgim.errors import SpgimError
from spgim.runtime.artifacts import load_artifacts
from spgim.runtime.registry import backend_record
from spgim.runtime.upsampling import check_upsampling
from spgim.streaming.options import EngineOptions, MattingOptions

from .config import ModelSpec, SequenceBatching, SequenceControl, TensorSpec, render_config
from .options import ServerOptions

MODEL_NAME = "spgim"
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "auto")
FRAMES = TensorSpec("frames", "TYPE_UINT8", (-1, -1, 3))
ALPHA = TensorSpec("alpha", "TYPE_FP32", (-1, -1))
MODEL_SOURCE = Path(__file__).with_name("triton_model.py")
LIVE_MODEL_NAME = "spgim_live"
LIVE_MODEL_SOURCE = Path(__file__).with_name("triton_live_model.py")
KEYFRAME = TensorSpec("keyframe", "TYPE_INT32", (1,))
SEQUENCE_CONTROLS = (
    SequenceControl("START", "CONTROL_SEQUENCE_START"),
    SequenceControl("END", "CONTROL_SEQUENCE_END"),
    SequenceControl("CORRID", "CONTROL_SEQUENCE_CORRID", "TYPE_UINT64"),
)
LIVE_QUEUE_DELAY_US = 2000
MAX_MACHINE_INSTANCES = 4
# The options' defaults (frozen, so one instance serves every call).
DEFAULT_ENGINE, DEFAULT_MATTING, DEFAULT_SERVER = EngineOptions(), MattingOptions(), ServerOptions()


def sized_to_the_machine(engine: EngineOptions, server: ServerOptions) -> tuple[EngineOptions, ServerOptions]:
    """``server.instances`` 0 made concrete for this machine: one instance per CPU this process may use, at most
    :data:`MAX_MACHINE_INSTANCES`, each with the CPUs shared among them as threads unless ``engine.threads`` says.

    On two cores, two instances of one thread serve four live streams at 0.92x the frames of four local
    processes, one instance of two threads at 0.51x (docs/benchmarks.md, Serving): a stream's client waits for
    each round trip, and a second instance keeps the other core busy meanwhile. Each instance is a backend
    process of its own (about 410 MiB with torch), hence the cap.
    """
    if server.instances:
        return engine, server
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    instances = max(1, min(cpus, MAX_MACHINE_INSTANCES))
    threads = engine.threads or max(1, cpus // instances)
    return dataclasses.replace(engine, threads=threads), dataclasses.replace(server, instances=instances)


def _parameters(model_dir: str, engine: EngineOptions, matting: MattingOptions, *, live: bool) -> dict[str, str]:
    """The parameters a model reads: the export folder and what runs it (values left to the export omitted; the
    keyframe and smoothing values only for the ``live`` model, the stateless one runs SPD on every frame)."""
    if engine.backend != "auto":
        backend_record(engine.backend)
    if engine.precision not in PRECISIONS:
        raise SpgimError(f"unknown precision {engine.precision!r}; choose one of {', '.join(PRECISIONS)}")
    check_upsampling(matting.upsampling)
    parameters = {
        "model_dir": model_dir,
        "backend": engine.backend,
        "precision": engine.precision,
        "upsampling": matting.upsampling,
    }
    if engine.threads:
        parameters["threads"] = str(engine.threads)
    for name, value in matting.stream_values().items():
        if value is not None and (live or name == "work_size"):
            parameters[name] = str(value)
    return parameters


def matting_model_spec(
    model_dir: str,
    engine: EngineOptions = DEFAULT_ENGINE,
    matting: MattingOptions = DEFAULT_MATTING,
    server: ServerOptions = DEFAULT_SERVER,
) -> ModelSpec:
    """The description of the ``spgim`` model: frames in, alpha out, stateless (SPD on every frame, no smoothing).

    Args:
        model_dir: the export folder as the model finds it: absolute, or relative to the model's own folder in the
            repository (``../..`` for a repository inside the export folder).
        engine: what :class:`~spgim.runtime.matting.Matter` runs (backend, precision, threads).
        matting: the working size and upsampling (the keyframe values matter to ``spgim_live`` only).
        server: ``instances`` (model instances on the CPU; 0: :func:`sized_to_the_machine`) and ``max_batch``
            (the most frames the dynamic batcher gives one call).
    """
    engine, server = sized_to_the_machine(engine, server)
    parameters = _parameters(model_dir, engine, matting, live=False)
    return ModelSpec(
        name=MODEL_NAME,
        backend="python",
        inputs=(FRAMES,),
        outputs=(ALPHA,),
        max_batch_size=server.max_batch,
        dynamic_batching=True,
        instance_kind="KIND_CPU",
        instance_count=server.instances,
        parameters=parameters,
    )


def live_model_spec(
    model_dir: str,
    engine: EngineOptions = DEFAULT_ENGINE,
    matting: MattingOptions = DEFAULT_MATTING,
    server: ServerOptions = DEFAULT_SERVER,
    *,
    queue_delay_us: int = LIVE_QUEUE_DELAY_US,
) -> ModelSpec:
    """The description of the ``spgim_live`` model: one frame of a sequence in, its alpha and keyframe flag out.

    Sequence batching with the *oldest* strategy: every request of a sequence goes to one instance in order,
    and an execute gathers the oldest waiting frame of up to ``server.max_batch`` sequences. The per-sequence
    state is keyed by the correlation id, not by a batch slot, so the model needs none of the direct strategy's
    slot bookkeeping (nor its READY control), a batch holds only sequences that have a frame waiting (direct
    pads idle slots), and a new sequence never waits for a free slot while others stay open.

    Args:
        model_dir, engine: as :func:`matting_model_spec`.
        matting: the working size, upsampling, keyframe interval and ramp and smoothing of every sequence (None:
            the export's stream defaults).
        server: ``instances``, ``max_batch`` (the most sequences' frames one execute takes) and ``sequence_idle``
            (a sequence with no frame for this many seconds is dropped, by the server and the model).
        queue_delay_us: how long the batcher waits for more sequences' frames before an execute.
    """
    engine, server = sized_to_the_machine(engine, server)
    idle_us = round(server.sequence_idle * 1e6)
    if idle_us < 1:
        raise SpgimError(f"the sequence idle timeout must be positive, got {server.sequence_idle:g} s")
    batching = SequenceBatching(
        controls=SEQUENCE_CONTROLS,
        max_sequence_idle_microseconds=idle_us,
        strategy="oldest",
        max_candidate_sequences=server.max_batch,
        max_queue_delay_microseconds=queue_delay_us,
    )
    return ModelSpec(
        name=LIVE_MODEL_NAME,
        backend="python",
        inputs=(FRAMES,),
        outputs=(ALPHA, KEYFRAME),
        max_batch_size=server.max_batch,
        sequence_batching=batching,
        instance_kind="KIND_CPU",
        instance_count=server.instances,
        parameters=_parameters(model_dir, engine, matting, live=True),
    )


def _write_model(spec: ModelSpec, source: Path, out: Path) -> None:
    """``out/<name>/config.pbtxt`` rendered from ``spec`` and ``source`` copied as ``out/<name>/1/model.py``."""
    folder = Path(out) / spec.name
    version = folder / "1"
    try:
        version.mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(render_config(spec), encoding="utf-8")
        shutil.copyfile(source, version / "model.py")
    except OSError as error:
        raise SpgimError(f"cannot write the model repository {out}: {error.strerror or error}") from None


def write_repository(
    model_dir: Path,
    out: Path,
    engine: EngineOptions = DEFAULT_ENGINE,
    matting: MattingOptions = DEFAULT_MATTING,
    server: ServerOptions = DEFAULT_SERVER,
    *,
    relative: bool = False,
) -> Path:
    """Write a Triton model repository serving ``model_dir`` into ``out``; returns ``out``.

    ``model_dir`` must be an ``spgim export`` folder (its manifest and sidecars are checked here, so that a
    wrong folder is one line now rather than a model that fails to load in the server). Existing files of
    ``out/spgim`` and ``out/spgim_live`` are replaced; other models in ``out`` are left alone. The options are
    those of :func:`matting_model_spec` and :func:`live_model_spec` (``server.instances`` 0: sized to this machine,
    :func:`sized_to_the_machine`). With ``relative`` the configs name the
    export folder relative to each model's folder, so that the export folder and a repository inside it move
    together (``spgim export --triton``); otherwise by its absolute path.
    """
    model_dir, out = Path(model_dir), Path(out)
    load_artifacts(model_dir)
    specs = []
    for name, make in ((MODEL_NAME, matting_model_spec), (LIVE_MODEL_NAME, live_model_spec)):
        where = os.path.relpath(model_dir.resolve(), (out / name).resolve()) if relative else str(model_dir.resolve())
        specs.append(make(where, engine, matting, server))
    for spec, source in zip(specs, (MODEL_SOURCE, LIVE_MODEL_SOURCE), strict=True):
        _write_model(spec, source, out)
    return out


def write_export_repository(model_dir: Path, out: Path) -> list[str]:
    """The repository ``spgim export --triton`` writes into ``out``: every model the export folder can feed.

    - ``spgim`` and ``spgim_live`` (:func:`write_repository`, the export folder named relative to them, so that
      the two move together): backend ``auto``; the precision the export was made in where it holds one (fp32
      for the fp32 upsample graph aside), ``auto`` (the fastest measured on the serving machine) where several;
      the working size, keyframes and batching at their defaults; one model instance.
    - The native flavour (:func:`spgim.serving.native.write_native_repository`) where the export holds the
      portable fp32 ONNX, with the ``tensorrt_plan`` configs where it holds a TensorRT flavour (``onnx-trt`` or
      ``engine``).

    Returns the names of the models written, in the order written.
    """
    from .native import write_native_repository

    model_dir, out = Path(model_dir), Path(out)
    artifacts = load_artifacts(model_dir)
    precisions = sorted({a.precision for a in artifacts if a.branch in ("spd", "spgm")})
    engine = EngineOptions(precision=precisions[0] if len(precisions) == 1 else "auto")
    # One instance: the machine that exports is not always the one that serves (spgim serve --model EXPORT sizes).
    write_repository(model_dir, out, engine, server=ServerOptions(instances=1), relative=True)
    names = [MODEL_NAME, LIVE_MODEL_NAME]
    portable = {(a.branch, a.format, a.precision) for a in artifacts}
    if {("spd", "onnx", "fp32"), ("spgm", "onnx", "fp32")} <= portable:
        tensorrt = any(a.format in ("onnx-trt", "engine") for a in artifacts)
        names += [folder.name for folder in write_native_repository(model_dir, out, tensorrt=tensorrt)]
    return names


def repository_models(folder: Path) -> dict[str, str] | None:
    """The models of a Triton model repository and what runs each (its ``backend``, else its ``platform``), or
    None where ``folder`` holds no model (every model is a sub-folder with a ``config.pbtxt``)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    models = {}
    for config in sorted(folder.glob("*/config.pbtxt")):
        kinds = re.findall(r'^(?:backend|platform):\s*"([^"]+)"', config.read_text(encoding="utf-8"), re.MULTILINE)
        models[config.parent.name] = kinds[0] if kinds else "unknown"
    return models or None
