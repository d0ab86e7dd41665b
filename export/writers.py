"""How each format's artifacts are written: one writer per format, each writing one file of one branch.

A writer takes the :class:`ExportJob`, the branch (``"spd"``, ``"spgm"`` or ``"upsample"``), the precision, the
path to write and the artifact it is made from (None where the format is made from the model itself), and returns
the facts its sidecar adds to the common ones. :data:`spgim.export.formats.FORMATS` says which writer serves
which format and what each is made from. The model-side modules (torch, ONNX, OpenVINO, AOTInductor) are imported
when a writer runs, so that the command line's help, which reads the table, stays light.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spgim.errors import SpgimError
from spgim.tensorrt_build import build_engine, find_plugin_library, import_tensorrt
from spgim.tst_op import plugin_description

from .profile import SizeProfile
from .sidecar import file_sha256, sidecar_path

if TYPE_CHECKING:
    from torch import nn

    from .calibration import BranchFeeds, Scenes
    from .io_spec import GraphSpec
    from .quantize import QuantizedPair

UPSAMPLE = "upsample"
# The keys of ExportJob.written: (format, branch, precision).
ArtifactKey = tuple[str, str, str]


@dataclass
class ExportJob:
    """What every writer reads: the models, their specs and example inputs, the size profile and the options.

    Attributes:
        examples: per branch the inputs traced with, at the profile's opt size (the upsample graph's frame at
            ``frame_sizes``' opt).
        frame_sizes: the upsample graph's frame (height, width): min, opt, max.
        batch: min, opt and max batch of the TensorRT profiles.
        plugin: the TST attention plugin library asked for (``--plugin``), or None to look it up.
        plugin_library: the library found by the engine step's check.
        calibration: int8: the folder of images to calibrate on, or None for generated scenes.
        accept_accuracy_loss: int8: write a pair that misses the accuracy gate.
        written: the artifacts written so far, by (format, branch, precision).
        int8_data: int8: the calibration and gate inputs, made once for every int8 format.
        quantized: int8: per format, its quantized pair until both files are in place.
        int8_sources: int8: per format that quantizes, the fp32 artifact each branch of its pair is quantized from.
    """

    out: Path
    models: dict[str, nn.Module]
    specs: dict[str, GraphSpec]
    examples: dict[str, tuple]
    profile: SizeProfile
    frame_sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    dynamic: bool
    batch: tuple[int, int, int]
    opset: int
    attention: str
    workspace_gb: float
    plugin: Path | None = None
    plugin_library: Path | None = None
    calibration: Path | None = None
    accept_accuracy_loss: bool = False
    written: dict[ArtifactKey, Path] = field(default_factory=dict)
    int8_data: tuple[str, BranchFeeds, Scenes, BranchFeeds] | None = None
    quantized: dict[str, QuantizedPair] = field(default_factory=dict)
    int8_sources: dict[str, dict[str, ArtifactKey]] = field(default_factory=dict)


Writer = Callable[[ExportJob, str, str, Path, "Path | None"], dict[str, Any]]


def write_torchscript(job: ExportJob, branch: str, precision: str, path: Path, source: Path | None) -> dict[str, Any]:
    """``torch.jit.trace`` of the branch (fp32)."""
    from .onnx_graphs import trace_torchscript

    trace_torchscript(job.models[branch], job.specs[branch], job.examples[branch], path)
    return {}


def _onnx_writer(fmt: str, flavour: str) -> Writer:
    """The writer of one ONNX flavour; its fp16 graph is converted from its fp32 one (a temporary one if the fp32
    graph is not asked for)."""

    def write(job: ExportJob, branch: str, precision: str, path: Path, source: Path | None) -> dict[str, Any]:
        from .onnx_graphs import convert_fp16, export_onnx

        if precision == "int8":
            return {**onnx_facts(job, branch, flavour), **write_int8(job, fmt, branch, path)}

        def fp32_graph(target: Path) -> None:
            # The upsample graph's frame axes are dynamic whatever --dynamic says (its spec holds the rest).
            dynamic = True if branch == UPSAMPLE else job.dynamic
            model, spec, example = job.models[branch], job.specs[branch], job.examples[branch]
            export_onnx(
                model, spec, example, target, flavour=flavour, opset=job.opset, dynamic=dynamic, attention=job.attention
            )

        if precision == "fp32":
            fp32_graph(path)
        elif (fmt, branch, "fp32") in job.written:
            convert_fp16(job.written[(fmt, branch, "fp32")], path)
        else:
            with tempfile.TemporaryDirectory(dir=job.out) as folder:
                fp32_path = Path(folder) / path.name
                fp32_graph(fp32_path)
                convert_fp16(fp32_path, path)
        return onnx_facts(job, branch, flavour)

    return write


write_onnx = _onnx_writer("onnx", "portable")
write_onnx_trt = _onnx_writer("onnx-trt", "tensorrt")


def onnx_facts(job: ExportJob, branch: str, flavour: str) -> dict[str, Any]:
    """An ONNX graph's sidecar facts: opset and flavour, SPGM's attention form or the plugin it calls."""
    facts: dict[str, Any] = {"opset": job.opset, "onnx_flavour": flavour}
    if flavour == "tensorrt":
        facts["plugin"] = plugin_description()
    elif branch == "spgm":
        facts["attention"] = job.attention
    return facts


def write_openvino(job: ExportJob, branch: str, precision: str, path: Path, source: Path | None) -> dict[str, Any]:
    """OpenVINO IR of the portable fp32 graph; its ``.bin`` is recorded in the sidecar and checked on load."""
    from .openvino_ir import export_openvino_ir

    assert source is not None, "OpenVINO IR is made from the portable ONNX graph"
    int8 = write_int8(job, "openvino", branch, path) if precision == "int8" else {}
    if not int8:
        export_openvino_ir(source, path)
    weights = path.with_suffix(".bin")
    companions = [{"file": weights.name, "bytes": weights.stat().st_size, "sha256": file_sha256(weights)}]
    return {**onnx_facts(job, branch, "portable"), "onnx_source": source.name, "companions": companions, **int8}


def write_int8(job: ExportJob, fmt: str, branch: str, path: Path) -> dict[str, Any]:
    """Put ``branch``'s int8 file of ``fmt`` at ``path``; the first branch quantizes and gates the pair (both
    branches at once: SPGM is calibrated on what SPD gives it). Returns the sidecar's ``int8`` entry."""
    from .calibration import calibration_scenes, fp32_feeds, gate_scenes
    from .quantize import Gate, quantize_pair

    if fmt not in job.quantized:
        if job.int8_data is None:
            models = {name: job.models[name] for name in ("spd", "spgm")}
            calibration = calibration_scenes(job.calibration, job.profile.opt_hw)
            gate = gate_scenes(job.profile.opt_hw)
            job.int8_data = (
                calibration.origin,
                fp32_feeds(models, job.specs, calibration.images),
                gate,
                fp32_feeds(models, job.specs, gate.images),
            )
        origin, calibration_feeds, gate, gate_feeds = job.int8_data
        suffix = path.name.removeprefix(branch)
        job.quantized[fmt] = quantize_pair(
            fmt,
            {name: job.written[key] for name, key in job.int8_sources[fmt].items()},
            calibration_feeds,
            origin,
            gate,
            gate_feeds,
            job.specs["spgm"].input_names,
            scratch=job.out,
            gate=Gate(),
            accept_loss=job.accept_accuracy_loss,
            file_names={name: name + suffix for name in ("spd", "spgm")},
        )
    pair = job.quantized[fmt]
    facts = dict(pair.facts)
    pair.place(branch, path)
    if not pair.files:
        del job.quantized[fmt]
    return {"int8": facts}


def check_pt2(job: ExportJob) -> None:
    """AOTInductor needs a C++ compiler: one line saying how to get one."""
    from spgim.aoti_build import aoti_compiler_missing

    missing = aoti_compiler_missing()
    if missing is not None:
        raise SpgimError(missing)


def write_pt2(job: ExportJob, branch: str, precision: str, path: Path, source: Path | None) -> dict[str, Any]:
    """An AOTInductor package for this CPU; the upsample graph's (fp32) with the frame's bounds too."""
    model, spec, example = job.models[branch], job.specs[branch], job.examples[branch]
    profile = job.profile
    if branch == UPSAMPLE:
        from .upsample_graph import export_upsample_pt2

        return export_upsample_pt2(
            model,
            spec,
            example,
            path,
            min_hw=profile.min_hw,
            max_hw=profile.max_hw,
            frame_min_hw=job.frame_sizes[0],
            frame_max_hw=job.frame_sizes[2],
            dynamic=job.dynamic,
        )
    from .pt2 import export_pt2

    return export_pt2(
        model,
        spec,
        example,
        path,
        precision=precision,
        min_hw=profile.min_hw,
        max_hw=profile.max_hw,
        dynamic=job.dynamic,
    )


def check_engine(job: ExportJob) -> None:
    """TensorRT, a GPU and the TST attention plugin library, before the first engine (exit code 2 without them)."""
    import_tensorrt()
    job.plugin_library = find_plugin_library(job.plugin)


def write_engine(job: ExportJob, branch: str, precision: str, path: Path, source: Path | None) -> dict[str, Any]:
    """A TensorRT engine built from the ONNX graph of the same precision, over the profile's sizes (int8: from the
    ``onnx-trt`` QDQ graph, whose quantization and gate its sidecar repeats)."""
    assert source is not None and job.plugin_library is not None, "check_engine runs before the first engine"
    profile = job.profile
    frame_sizes = {"frame_hw": job.frame_sizes} if branch == UPSAMPLE else {}
    shapes = job.specs[branch].profile(profile.min_hw, profile.opt_hw, profile.max_hw, job.batch, **frame_sizes)
    facts = build_engine(
        source,
        path,
        profile=shapes,
        precision=precision,
        workspace_gb=job.workspace_gb,
        plugin_library=job.plugin_library if branch == "spgm" else None,
        timing_cache=job.out / "timing.cache",
    )
    extra = {**facts, "onnx_source": source.name, "optimization_profile": shapes}
    if precision == "int8":
        extra["int8"] = json.loads(sidecar_path(source).read_text())["int8"]
    if branch == "spgm":
        # Its file name only: the runtime loads the plugin from its own build, $SPGIM_TST_PLUGIN or --plugin,
        # never from a path an export folder names.
        extra["plugin"] = {**plugin_description(), "library": job.plugin_library.name}
    return extra
