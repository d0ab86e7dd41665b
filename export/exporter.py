"""``spgim export``: SPD and SPGM checkpoints to TorchScript, ONNX (two flavours) and TensorRT engines.

Every artifact gets a JSON sidecar (:mod:`spgim.export.sidecar`) that the runtime checks before
the first frame. ``spgim-export.json`` in the output folder lists them all.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spgim import __version__
from spgim.errors import SpgimError
from spgim.tensorrt_build import build_engine, find_plugin_library, import_tensorrt
from spgim.train.checkpoint import load_checkpoint, load_model, weights_digest
from spgim.train.models import guide_channels
from spgim.train.summary import model_summary
from spgim.tst_op import plugin_description

from .attention_nodes import DEFAULT_PORTABLE_ATTENTION, portable_attention
from .io_spec import GraphSpec, spd_spec, spgm_spec
from .onnx_graphs import convert_fp16, export_onnx, trace_torchscript
from .sidecar import file_sha256, write_sidecar

FORMATS = ("torchscript", "onnx", "onnx-trt", "openvino", "pt2", "engine")
PRECISIONS = ("fp32", "fp16", "bf16")
# Which precisions each format is written in (others in --precision are for the other formats); TorchScript
# and OpenVINO IR are written in fp32 and cast by their runtimes.
FORMAT_PRECISIONS = {
    "torchscript": ("fp32",),
    "onnx": ("fp32", "fp16"),
    "onnx-trt": ("fp32", "fp16"),
    "openvino": ("fp32",),
    "pt2": ("fp32", "bf16"),
    "engine": ("fp32", "fp16"),
}
MANIFEST = "spgim-export.json"
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class ExportRequest:
    """What ``spgim export`` was asked for."""

    spd: Path
    spgm: Path
    out: Path
    formats: list[str]
    precisions: list[str]
    height: int
    width: int
    dynamic: bool = False
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    batch: tuple[int, int, int] = (1, 1, 1)
    opset: int = 17
    workspace_gb: float = 4.0
    plugin: Path | None = None
    attention: str = DEFAULT_PORTABLE_ATTENTION
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def load_pair(
    spd_path: Path, spgm_path: Path
) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """Load SPD and SPGM (eval mode) and refuse a pair that does not belong together."""
    spgm_payload = load_checkpoint(spgm_path, branch="spgm")
    spd = load_model(spd_path, "spd", spgm_payload["config"]).eval()
    spd_digest = weights_digest(spd.state_dict())
    expected = spgm_payload["extra"].get("spd_digest")
    if expected is not None and expected != spd_digest:
        raise SpgimError(
            f"{spgm_path} was trained with another SPD than {spd_path}; export the pair it was trained with"
        )
    spgm = load_model(spgm_path, "spgm").eval()
    source = {
        "spd_checkpoint": {"path": str(spd_path), "sha256": file_sha256(spd_path), "weights": spd_digest},
        "spgm_checkpoint": {
            "path": str(spgm_path),
            "sha256": file_sha256(spgm_path),
            "weights": weights_digest(spgm.state_dict()),
            "spd_weights": expected,
        },
    }
    return spd, spgm, spgm_payload["config"], source


def run_export(request: ExportRequest) -> list[dict[str, Any]]:
    """Export everything asked for; returns the artifact list also written to the manifest.

    Engines come last: without TensorRT or a GPU the other formats are already on disk when the
    engine step raises its one-line error (exit code 2).
    """
    unknown = sorted(set(request.formats) - set(FORMATS)) + sorted(set(request.precisions) - set(PRECISIONS))
    if unknown:
        raise SpgimError(
            f"unknown format or precision {', '.join(unknown)}; formats {FORMATS}, precisions {PRECISIONS}"
        )
    portable_attention(request.attention)
    for side in (request.height, request.width):
        if side <= 0 or side % 32:
            raise SpgimError(f"export size {request.width}x{request.height} must be multiples of 32")
    spd, spgm, config, source = load_pair(request.spd, request.spgm)
    request.out.mkdir(parents=True, exist_ok=True)
    channels = guide_channels(config)
    specs = {"spd": spd_spec(channels), "spgm": spgm_spec(channels)}
    models = {"spd": spd, "spgm": spgm}
    flops = model_summary(config, request.height, request.width)["flops"]
    (image,) = specs["spd"].dummy_inputs(request.height, request.width, request.batch[1])
    with torch.no_grad():
        examples = {"spd": (image,), "spgm": (image, *spd(image))}
    common = {
        "spgim_version": __version__,
        "torch_version": torch.__version__,
        "config": config,
        "source": source,
        "export_size": [request.width, request.height],
        "profile": _size_profile(request),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
    }

    def record(path: Path, branch: str, fmt: str, precision: str, extra: dict[str, Any]) -> None:
        description = {
            "branch": branch,
            "format": fmt,
            "precision": precision,
            **specs[branch].describe(DTYPE_NAMES[precision]),
            "flops_per_frame": flops[branch],
            **common,
            **extra,
        }
        write_sidecar(path, description)
        request.artifacts.append({"branch": branch, "format": fmt, "precision": precision, "file": path.name})

    onnx_files: dict[tuple[str, str, str], Path] = {}
    for branch in ("spd", "spgm"):
        model, spec, example = models[branch], specs[branch], examples[branch]
        if "torchscript" in request.formats:
            path = request.out / f"{branch}.torchscript.pt"
            trace_torchscript(model, spec, example, path)
            record(path, branch, "torchscript", "fp32", {})
        # OpenVINO IR and engines are made from the ONNX graphs, which are then written too.
        needs_onnx = {"onnx": ("openvino", "engine"), "onnx-trt": ("engine",)}
        flavours = [
            f for f in ("onnx", "onnx-trt") if f in request.formats or set(needs_onnx[f]) & set(request.formats)
        ]
        for fmt in flavours:
            # SPD has no attention: its TensorRT-flavour graph is the portable one.
            if fmt == "onnx-trt" and branch == "spd":
                continue
            flavour = "portable" if fmt == "onnx" else "tensorrt"
            suffix = "" if flavour == "portable" else ".trt"
            fp32_path = request.out / f"{branch}{suffix}.onnx"
            export_onnx(
                model,
                spec,
                example,
                fp32_path,
                flavour=flavour,
                opset=request.opset,
                dynamic=request.dynamic,
                attention=request.attention,
            )
            extra: dict[str, Any] = {"opset": request.opset, "onnx_flavour": flavour}
            if flavour == "tensorrt":
                extra["plugin"] = plugin_description()
            elif branch == "spgm":
                extra["attention"] = request.attention
            if "fp32" in request.precisions:
                record(fp32_path, branch, fmt, "fp32", extra)
                onnx_files[(branch, fmt, "fp32")] = fp32_path
            if "fp16" in request.precisions:
                fp16_path = request.out / f"{branch}{suffix}.fp16.onnx"
                convert_fp16(fp32_path, fp16_path)
                record(fp16_path, branch, fmt, "fp16", extra)
                onnx_files[(branch, fmt, "fp16")] = fp16_path
            if fmt == "onnx" and "openvino" in request.formats:
                _write_openvino_ir(request, branch, fp32_path, extra, record)
    _write_manifest(request)
    if "pt2" in request.formats:
        _write_pt2(request, specs, models, examples, record)
        _write_manifest(request)
    if "engine" in request.formats:
        _build_engines(request, specs, onnx_files, record)
        _write_manifest(request)
    return request.artifacts


def _write_openvino_ir(
    request: ExportRequest, branch: str, onnx_path: Path, extra: dict[str, Any], record: Any
) -> None:
    """OpenVINO IR of the portable fp32 graph; its ``.bin`` is recorded in the sidecar and checked on load."""
    from .openvino_ir import export_openvino_ir

    xml = request.out / f"{branch}.xml"
    export_openvino_ir(onnx_path, xml)
    weights = xml.with_suffix(".bin")
    companions = [{"file": weights.name, "bytes": weights.stat().st_size, "sha256": file_sha256(weights)}]
    record(xml, branch, "openvino", "fp32", {**extra, "onnx_source": onnx_path.name, "companions": companions})


def _write_pt2(
    request: ExportRequest,
    specs: dict[str, GraphSpec],
    models: dict[str, torch.nn.Module],
    examples: dict[str, tuple],
    record: Any,
) -> None:
    """AOTInductor packages for this CPU, one per branch and precision (fp32, bf16) asked for."""
    from .pt2 import export_pt2

    sizes = _size_profile(request)
    precisions = [p for p in request.precisions if p in FORMAT_PRECISIONS["pt2"]]
    if not precisions:
        raise SpgimError(f"pt2 packages are fp32 or bf16; --precision {','.join(request.precisions)} asks for neither")
    for precision in precisions:
        for branch in ("spd", "spgm"):
            path = request.out / f"{branch}.{precision}.pt2"
            facts = export_pt2(
                models[branch],
                specs[branch],
                examples[branch],
                path,
                precision=precision,
                min_hw=_height_width(sizes["min"]),
                max_hw=_height_width(sizes["max"]),
                dynamic=request.dynamic,
            )
            record(path, branch, "pt2", precision, facts)


def _build_engines(
    request: ExportRequest, specs: dict[str, GraphSpec], onnx_files: dict[tuple[str, str, str], Path], record: Any
) -> None:
    import_tensorrt()
    plugin = find_plugin_library(request.plugin)
    sizes = _size_profile(request)
    for precision in [p for p in request.precisions if p in FORMAT_PRECISIONS["engine"]]:
        for branch in ("spd", "spgm"):
            fmt = "onnx" if branch == "spd" else "onnx-trt"
            source = onnx_files[(branch, fmt, precision)]
            profile = specs[branch].profile(
                _height_width(sizes["min"]), _height_width(sizes["opt"]), _height_width(sizes["max"]), request.batch
            )
            engine_path = request.out / f"{branch}.{precision}.engine"
            facts = build_engine(
                source,
                engine_path,
                profile=profile,
                precision=precision,
                workspace_gb=request.workspace_gb,
                plugin_library=plugin if branch == "spgm" else None,
                timing_cache=request.out / "timing.cache",
            )
            extra = {**facts, "onnx_source": source.name, "optimization_profile": profile}
            if branch == "spgm":
                extra["plugin"] = {**plugin_description(), "library": str(plugin)}
            record(engine_path, branch, "engine", precision, extra)


def _height_width(width_height: list[int]) -> tuple[int, int]:
    return width_height[1], width_height[0]


def _size_profile(request: ExportRequest) -> dict[str, list[int]]:
    """Input sizes (W, H) the artifacts accept: fixed, or min/opt/max with --dynamic."""
    opt = [request.width, request.height]
    if not request.dynamic:
        return {"min": opt, "opt": opt, "max": opt}
    smallest = (
        list(request.min_size[::-1])
        if request.min_size
        else [max(32, request.width // 2), max(32, request.height // 2)]
    )
    largest = list(request.max_size[::-1]) if request.max_size else [request.width * 2, request.height * 2]
    return {"min": smallest, "opt": opt, "max": largest}


def _write_manifest(request: ExportRequest) -> None:
    manifest = {"format": "spgim-export", "format_version": 1, "artifacts": request.artifacts}
    (request.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
