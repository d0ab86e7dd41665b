"""Every backend as one record: the artifacts it reads, its precisions, its probe, its factory, its ceiling.

Callers (``Matter``, ``auto``'s ranking, ``spgim bench``, the GPU check script, the tests) read this
table; adding a backend is one record here and one file for the backend itself. Factories, probes and
ceiling runners import their engine lazily, so a machine without OpenVINO, TensorRT or a GPU can still
list every backend and say why one cannot run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spgim.errors import SpgimError
from spgim.machine import cpu_facts, native_bf16_missing

from . import ceilings
from .artifacts import Artifact, load_artifacts, select_pair, verify_files
from .devices import unavailable_reason
from .protocol import Backend


@dataclass(frozen=True)
class BackendOptions:
    """What every factory may use: the precision to run and where and how to run it."""

    precision: str
    threads: int = 0
    gpu: int = 0
    plugin: str | Path | None = None
    spinning: bool = True


@dataclass(frozen=True)
class BackendRecord:
    """One backend.

    Attributes:
        name: what ``--backend`` takes.
        formats: artifact formats it reads, preferred first (manifest ``format`` values).
        precisions: precisions it runs.
        device: ``"cpu"`` or ``"cuda"``.
        probe: ``precision -> reason`` it cannot run on this machine, or None when it can.
        factory: opens it on an SPD/SPGM artifact pair.
        ceiling: ResNet-50 on the same engine, device and precision (see :mod:`.ceilings`).
        casts_at_runtime: the precisions it runs by casting the fp32 artifact (TorchScript, OpenVINO's bf16); the
            others read the artifact of their own precision (OpenVINO's int8: the NNCF-quantized IR).
        in_auto: whether ``backend="auto"`` considers it.
    """

    name: str
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    device: str
    probe: Callable[[str], str | None]
    factory: Callable[[Artifact, Artifact, BackendOptions], Backend]
    ceiling: Callable[[ceilings.ResNet50, ceilings.CeilingOptions], ceilings.Runner]
    casts_at_runtime: tuple[str, ...] = ()
    in_auto: bool = True

    def artifact_precision(self, precision: str) -> str:
        """The exported precision this backend reads to run ``precision``."""
        return "fp32" if precision in self.casts_at_runtime else precision


def _always(_: str) -> None:
    return None


def _gpu_probe(name: str) -> Callable[[str], str | None]:
    return lambda _precision: unavailable_reason(name)


def _torch_cpu_probe(precision: str) -> str | None:
    if precision == "bf16":
        return native_bf16_missing()
    if precision == "fp16" and not cpu_facts()["flags"]["avx512_fp16"]:
        return "torch's CPU fp16 kernels are emulated without AVX512-FP16: slower than fp32 here; use fp32"
    return None


def _openvino_probe(precision: str) -> str | None:
    from .openvino_backend import openvino_unavailable

    return openvino_unavailable(precision)


def _aoti_probe(precision: str) -> str | None:
    from .aoti_backend import aoti_unavailable

    return aoti_unavailable(precision)


def _onnxruntime(spd: Artifact, spgm: Artifact, options: BackendOptions) -> Backend:
    from .backends import OnnxRuntimeBackend

    return OnnxRuntimeBackend(spd, spgm, threads=options.threads, spinning=options.spinning)


def _torchscript(device: str) -> Callable[[Artifact, Artifact, BackendOptions], Backend]:
    def factory(spd: Artifact, spgm: Artifact, options: BackendOptions) -> Backend:
        from .backends import TorchScriptBackend

        target = "cpu" if device == "cpu" else f"cuda:{options.gpu}"
        return TorchScriptBackend(spd, spgm, dtype=options.precision, device=target)

    return factory


def _onnxruntime_gpu(provider: str) -> Callable[[Artifact, Artifact, BackendOptions], Backend]:
    def factory(spd: Artifact, spgm: Artifact, options: BackendOptions) -> Backend:
        from .onnxruntime_gpu import OnnxRuntimeGpuBackend

        return OnnxRuntimeGpuBackend(spd, spgm, provider=provider, gpu=options.gpu)

    return factory


def _tensorrt(spd: Artifact, spgm: Artifact, options: BackendOptions) -> Backend:
    from .tensorrt_backend import TensorRTBackend

    return TensorRTBackend(spd, spgm, gpu=options.gpu, plugin=options.plugin)


def _openvino(spd: Artifact, spgm: Artifact, options: BackendOptions) -> Backend:
    from .openvino_backend import OpenVINOBackend

    return OpenVINOBackend(spd, spgm, precision=options.precision, threads=options.threads)


def _aotinductor(spd: Artifact, spgm: Artifact, options: BackendOptions) -> Backend:
    from .aoti_backend import AOTInductorBackend

    return AOTInductorBackend(spd, spgm, precision=options.precision, threads=options.threads)


_RECORDS = (
    BackendRecord(
        "tensorrt", ("engine",), ("fp32", "fp16", "int8"), "cuda", _gpu_probe("tensorrt"), _tensorrt, ceilings.tensorrt
    ),
    BackendRecord(
        "onnxruntime-trt",
        ("onnx",),
        ("fp32", "fp16"),
        "cuda",
        _gpu_probe("onnxruntime-trt"),
        _onnxruntime_gpu("tensorrt"),
        ceilings.onnxruntime_gpu("tensorrt"),
    ),
    BackendRecord(
        "onnxruntime-cuda",
        ("onnx",),
        ("fp32", "fp16"),
        "cuda",
        _gpu_probe("onnxruntime-cuda"),
        _onnxruntime_gpu("cuda"),
        ceilings.onnxruntime_gpu("cuda"),
    ),
    BackendRecord(
        "torchscript-cuda",
        ("torchscript",),
        ("fp32", "bf16", "fp16"),
        "cuda",
        _gpu_probe("torchscript-cuda"),
        _torchscript("cuda"),
        ceilings.torchscript("cuda"),
        casts_at_runtime=("bf16", "fp16"),
    ),
    BackendRecord(
        "openvino",
        ("openvino", "onnx"),
        ("fp32", "bf16", "int8"),
        "cpu",
        _openvino_probe,
        _openvino,
        ceilings.openvino,
        casts_at_runtime=("bf16",),
    ),
    BackendRecord("aotinductor", ("pt2",), ("fp32", "bf16"), "cpu", _aoti_probe, _aotinductor, ceilings.aotinductor),
    BackendRecord(
        "onnxruntime", ("onnx",), ("fp32", "fp16", "int8"), "cpu", _always, _onnxruntime, ceilings.onnxruntime_cpu
    ),
    BackendRecord(
        "torchscript",
        ("torchscript",),
        ("fp32", "bf16", "fp16"),
        "cpu",
        _torch_cpu_probe,
        _torchscript("cpu"),
        ceilings.torchscript("cpu"),
        casts_at_runtime=("bf16", "fp16"),
    ),
    # The TensorRT-flavour graph with the plugin's C++ reference as an ONNX Runtime custom op: it proves
    # the graph TensorRT will see computes the right thing; it is single-threaded and never picked by auto.
    BackendRecord(
        "onnxruntime-twin",
        ("onnx-trt",),
        ("fp32", "fp16", "int8"),
        "cpu",
        _always,
        _onnxruntime,
        ceilings.onnxruntime_twin,
        in_auto=False,
    ),
)
BACKENDS: dict[str, BackendRecord] = {record.name: record for record in _RECORDS}


def backend_record(name: str) -> BackendRecord:
    """The record of ``name``, or one line listing the known backends."""
    if name not in BACKENDS:
        raise SpgimError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    return BACKENDS[name]


def find_pair(record: BackendRecord, artifacts: list[Artifact], precision: str) -> tuple[Artifact, Artifact]:
    """The SPD and SPGM artifacts ``record`` reads to run ``precision``, in its preferred format present.

    SPD has no attention, so the TensorRT-flavour format pairs SPGM's graph with SPD's portable one.
    """
    wanted = record.artifact_precision(precision)
    for fmt in record.formats:
        try:
            return select_pair(artifacts, fmt, wanted)
        except SpgimError as error:
            if "another SPD" in str(error):
                raise
    available = sorted({f"{a.format}/{a.precision}" for a in artifacts if a.branch == "spgm"})
    raise SpgimError(
        f"{record.name} {precision} needs {' or '.join(record.formats)} artifacts in {wanted}; "
        f"this folder has {', '.join(available)}"
    )


def has_artifacts(record: BackendRecord, artifacts: list[Artifact], precision: str) -> bool:
    """Whether the folder holds what ``record`` reads for ``precision``."""
    try:
        find_pair(record, artifacts, precision)
    except SpgimError:
        return False
    return True


def open_backend(
    record: BackendRecord, artifacts: list[Artifact], options: BackendOptions
) -> tuple[Backend, Artifact, Artifact]:
    """``record``'s backend on the folder's artifacts for ``options.precision``, and the SPD/SPGM pair it reads.

    The pair's files are checked against their sidecars' sha256 first (:func:`~.artifacts.verify_files`):
    opening TorchScript, an AOTInductor package or an engine runs code from the export folder.
    """
    if options.precision not in record.precisions:
        raise SpgimError(f"{record.name} has no {options.precision} (it runs {', '.join(record.precisions)})")
    spd, spgm = find_pair(record, artifacts, options.precision)
    for artifact in (spd, spgm):
        verify_files(artifact)
    return record.factory(spd, spgm, options), spd, spgm


def runnable(record: BackendRecord, artifacts: list[Artifact], precision: str) -> str | None:
    """Why ``record`` cannot run ``precision`` on these artifacts on this machine, or None when it can."""
    if precision not in record.precisions:
        return f"{record.name} has no {precision}"
    # What the machine lacks comes first: it holds for every export folder.
    return record.probe(precision) or (
        None
        if has_artifacts(record, artifacts, precision)
        else f"{record.name} {precision}: no {'/'.join(record.formats)} artifacts in this folder"
    )


def usable_backends(model_dir: str | Path) -> list[str]:
    """The backends that this machine can run on ``model_dir`` in at least one precision."""
    artifacts = load_artifacts(model_dir)
    return [
        record.name
        for record in BACKENDS.values()
        if any(runnable(record, artifacts, precision) is None for precision in record.precisions)
    ]
