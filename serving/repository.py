"""A Triton model repository for an ``spgim export`` folder.

``write_repository(model_dir, out)`` writes ``out/spgim/config.pbtxt`` (rendered from a
:class:`.config.ModelSpec`) and ``out/spgim/1/model.py`` (the generic :mod:`.triton_model`, copied):
a Python-backend model that mattes uint8 ``(N, H, W, 3)`` RGB frames into float32 ``(N, H, W)`` alpha
with :class:`spgim.runtime.matting.Matter`. The export folder and the options travel as the config's
parameters; nothing about them is written into the model's code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from spgim.errors import SpgimError
from spgim.runtime.artifacts import load_artifacts
from spgim.runtime.registry import backend_record
from spgim.runtime.upsampling import check_upsampling

from .config import ModelSpec, TensorSpec, render_config

MODEL_NAME = "spgim"
MAX_BATCH_SIZE = 8
PRECISIONS = ("fp32", "fp16", "bf16", "auto")
FRAMES = TensorSpec("frames", "TYPE_UINT8", (-1, -1, 3))
ALPHA = TensorSpec("alpha", "TYPE_FP32", (-1, -1))
MODEL_SOURCE = Path(__file__).with_name("triton_model.py")


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
) -> Path:
    """Write a Triton model repository serving ``model_dir`` into ``out``; returns ``out``.

    ``model_dir`` must be an ``spgim export`` folder (its manifest and sidecars are checked here, so that a
    wrong folder is one line now rather than a model that fails to load in the server). Existing files of
    ``out/spgim`` are replaced; other models in ``out`` are left alone. The other arguments are those of
    :func:`matting_model_spec`.
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
    folder = Path(out) / spec.name
    version = folder / "1"
    try:
        version.mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(render_config(spec), encoding="utf-8")
        shutil.copyfile(MODEL_SOURCE, version / "model.py")
    except OSError as error:
        raise SpgimError(f"cannot write the model repository {out}: {error.strerror or error}") from None
    return Path(out)
