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

import shutil
from pathlib import Path

from spgim.errors import SpgimError
from spgim.runtime.artifacts import load_artifacts
from spgim.runtime.registry import backend_record
from spgim.runtime.upsampling import check_upsampling

from .config import ModelSpec, SequenceBatching, SequenceControl, TensorSpec, render_config

MODEL_NAME = "spgim"
MAX_BATCH_SIZE = 8
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
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
SEQUENCE_IDLE_S = 60.0
LIVE_QUEUE_DELAY_US = 2000


def matting_model_spec(
    model_dir: Path,
    *,
    backend: str = "auto",
    precision: str = "fp32",
    instances: int | None = None,
    work_size: int | None = None,
    threads: int = 0,
    upsampling: str = "auto",
    max_batch_size: int = MAX_BATCH_SIZE,
) -> ModelSpec:
    """The description of the ``spgim`` model: frames in, alpha out, on ``backend`` in ``precision``.

    Args:
        model_dir: the export folder; written into the parameters as an absolute path.
        backend, precision: what :class:`~spgim.runtime.matting.Matter` runs (``"auto"`` lets it measure).
        instances: model instances on the CPU (None: one).
        work_size: the working size's longer side (None: the export's).
        threads: CPU threads per instance (0: the engine's default).
        upsampling: how the alpha reaches the frame's size (see :class:`~spgim.runtime.matting.Matter`).
        max_batch_size: the most frames the server's dynamic batcher gives one call.
    """
    if backend != "auto":
        backend_record(backend)
    if precision not in PRECISIONS:
        raise SpgimError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if work_size is not None and work_size < 32:
        raise SpgimError(f"work size must be at least 32, got {work_size}")
    if threads < 0:
        raise SpgimError(f"threads must be at least 0, got {threads}")
    check_upsampling(upsampling)
    parameters = {
        "model_dir": str(model_dir.resolve()),
        "backend": backend,
        "precision": precision,
        "upsampling": upsampling,
    }
    if work_size is not None:
        parameters["work_size"] = str(work_size)
    if threads:
        parameters["threads"] = str(threads)
    return ModelSpec(
        name=MODEL_NAME,
        backend="python",
        inputs=(FRAMES,),
        outputs=(ALPHA,),
        max_batch_size=max_batch_size,
        dynamic_batching=True,
        instance_kind="KIND_CPU",
        instance_count=instances or 1,
        parameters=parameters,
    )


def live_model_spec(
    model_dir: Path,
    *,
    backend: str = "auto",
    precision: str = "fp32",
    instances: int | None = None,
    work_size: int | None = None,
    threads: int = 0,
    upsampling: str = "auto",
    max_batch_size: int = MAX_BATCH_SIZE,
    keyframe_interval: int | None = None,
    sequence_idle_s: float = SEQUENCE_IDLE_S,
    queue_delay_us: int = LIVE_QUEUE_DELAY_US,
) -> ModelSpec:
    """The description of the ``spgim_live`` model: one frame of a sequence in, its alpha and keyframe flag out.

    Sequence batching with the *oldest* strategy: every request of a sequence goes to one instance in order,
    and an execute gathers the oldest waiting frame of up to ``max_batch_size`` sequences. The per-sequence
    state is keyed by the correlation id, not by a batch slot, so the model needs none of the direct strategy's
    slot bookkeeping (nor its READY control), a batch holds only sequences that have a frame waiting (direct
    pads idle slots), and a new sequence never waits for a free slot while others stay open.

    Args:
        model_dir, backend, precision, instances, work_size, threads, upsampling: as :func:`matting_model_spec`.
        max_batch_size: the most sequences' frames one execute takes.
        keyframe_interval: SPD every this many frames of a sequence (None: the export's stream default).
        sequence_idle_s: a sequence with no frame for this long is dropped (by the server and the model).
        queue_delay_us: how long the batcher waits for more sequences' frames before an execute.
    """
    spec = matting_model_spec(
        model_dir,
        backend=backend,
        precision=precision,
        instances=instances,
        work_size=work_size,
        threads=threads,
        upsampling=upsampling,
        max_batch_size=max_batch_size,
    )
    if keyframe_interval is not None and keyframe_interval < 0:
        raise SpgimError(f"keyframe interval must be at least 0, got {keyframe_interval}")
    if max_batch_size < 1:
        raise SpgimError(f"max batch size must be at least 1, got {max_batch_size}")
    parameters = dict(spec.parameters)
    if keyframe_interval is not None:
        parameters["keyframe_interval"] = str(keyframe_interval)
    idle_us = round(sequence_idle_s * 1e6)
    if idle_us < 1:
        raise SpgimError(f"the sequence idle timeout must be positive, got {sequence_idle_s:g} s")
    batching = SequenceBatching(
        controls=SEQUENCE_CONTROLS,
        max_sequence_idle_microseconds=idle_us,
        strategy="oldest",
        max_candidate_sequences=max(max_batch_size, 1),
        max_queue_delay_microseconds=queue_delay_us,
    )
    return ModelSpec(
        name=LIVE_MODEL_NAME,
        backend="python",
        inputs=(FRAMES,),
        outputs=(ALPHA, KEYFRAME),
        max_batch_size=max_batch_size,
        sequence_batching=batching,
        instance_kind="KIND_CPU",
        instance_count=instances or 1,
        parameters=parameters,
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
    *,
    backend: str = "auto",
    precision: str = "fp32",
    instances: int | None = None,
    work_size: int | None = None,
    threads: int = 0,
    upsampling: str = "auto",
    max_batch_size: int = MAX_BATCH_SIZE,
    keyframe_interval: int | None = None,
    sequence_idle_s: float = SEQUENCE_IDLE_S,
    live_queue_delay_us: int = LIVE_QUEUE_DELAY_US,
) -> Path:
    """Write a Triton model repository serving ``model_dir`` into ``out``; returns ``out``.

    ``model_dir`` must be an ``spgim export`` folder (its manifest and sidecars are checked here, so that a
    wrong folder is one line now rather than a model that fails to load in the server). Existing files of
    ``out/spgim`` and ``out/spgim_live`` are replaced; other models in ``out`` are left alone. The other
    arguments are those of :func:`matting_model_spec` and :func:`live_model_spec` (``live_queue_delay_us``
    is the latter's ``queue_delay_us``).
    """
    model_dir = Path(model_dir)
    load_artifacts(model_dir)
    spec = matting_model_spec(
        model_dir,
        backend=backend,
        precision=precision,
        instances=instances,
        work_size=work_size,
        threads=threads,
        upsampling=upsampling,
        max_batch_size=max_batch_size,
    )
    live = live_model_spec(
        model_dir,
        backend=backend,
        precision=precision,
        instances=instances,
        work_size=work_size,
        threads=threads,
        upsampling=upsampling,
        max_batch_size=max_batch_size,
        keyframe_interval=keyframe_interval,
        sequence_idle_s=sequence_idle_s,
        queue_delay_us=live_queue_delay_us,
    )
    _write_model(spec, MODEL_SOURCE, out)
    _write_model(live, LIVE_MODEL_SOURCE, out)
    return Path(out)
