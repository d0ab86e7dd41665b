"""``spgim export``: SPD and SPGM checkpoints to TorchScript, ONNX (two flavours) and TensorRT engines.

Every artifact gets a JSON sidecar (:mod:`spgim.export.sidecar`) that the runtime checks before
the first frame. ``spgim-export.json`` in the output folder lists them all.

Beside SPD and SPGM, every format asked for also gets the ``upsample`` graph (guided upsampling of the
working-size alpha to the full-resolution frame, :mod:`spgim.train.models.upsample`): fp32 only, whatever
the precisions (fp16/bf16 runs read the fp32 upsampler), with the frame's height and width always dynamic.
Files: ``upsample.torchscript.pt``, ``upsample.onnx``, ``upsample.xml``/``.bin``, ``upsample.fp32.pt2``,
``upsample.fp32.engine``. It has no checkpoint: its sidecar's ``source`` is ``{"upsampler": {radius, eps}}``.
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
from spgim.train.config import stream_defaults
from spgim.train.models import guide_channels
from spgim.train.models.upsample import DEFAULT_EPS, DEFAULT_RADIUS, GuidedUpsampler, upsample_flops
from spgim.train.recipes import RECIPES
from spgim.train.summary import model_summary
from spgim.tst_op import plugin_description

from .attention_nodes import DEFAULT_PORTABLE_ATTENTION, portable_attention
from .io_spec import FRAME_PROFILE_HW, GraphSpec, spd_spec, spgm_spec, upsample_spec
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
UPSAMPLE = "upsample"
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
    # The upsample graph: guided filter radius and eps, and its frame sizes (height, width): min, opt, max.
    upsample_radius: int = DEFAULT_RADIUS
    upsample_eps: float = DEFAULT_EPS
    frame_sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = FRAME_PROFILE_HW
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
    spd_extra = load_checkpoint(spd_path, branch="spd")["extra"]
    source = {
        "spd_checkpoint": {
            "path": str(spd_path),
            "sha256": file_sha256(spd_path),
            "weights": spd_digest,
            "mask_sigma": spd_extra.get("mask_sigma"),
        },
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
    if request.upsample_radius < 1 or not request.upsample_eps > 0:
        raise SpgimError(
            f"guided upsampling needs a radius of at least 1 and a positive eps, "
            f"got radius {request.upsample_radius} and eps {request.upsample_eps}"
        )
    for side in (request.height, request.width):
        if side <= 0 or side % 32:
            raise SpgimError(f"export size {request.width}x{request.height} must be multiples of 32")
    _check_frame_sizes(request.frame_sizes)
    spd, spgm, config, source = load_pair(request.spd, request.spgm)
    request.out.mkdir(parents=True, exist_ok=True)
    channels = guide_channels(config)
    specs = {"spd": spd_spec(channels), "spgm": spgm_spec(channels), UPSAMPLE: upsample_spec(dynamic=request.dynamic)}
    upsampler = GuidedUpsampler(request.upsample_radius, request.upsample_eps).eval()
    models = {"spd": spd, "spgm": spgm, UPSAMPLE: upsampler}
    flops = model_summary(config, request.height, request.width)["flops"]
    (image,) = specs["spd"].dummy_inputs(request.height, request.width, request.batch[1])
    frame_hw = request.frame_sizes[1]
    with torch.no_grad():
        examples = {
            "spd": (image,),
            "spgm": (image, *spd(image)),
            # Traced at the opt frame size, which differs from the working size: nothing ties the two.
            UPSAMPLE: specs[UPSAMPLE].dummy_inputs(request.height, request.width, request.batch[1], frame_hw=frame_hw),
        }
    common = {
        "spgim_version": __version__,
        "torch_version": torch.__version__,
        "config": config,
        "source": source,
        "export_size": [request.width, request.height],
        "profile": _size_profile(request),
        "stream": _stream_defaults(config, source),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
    }

    # The upsample graph has no checkpoint or model config; what it is made of is its radius and eps.
    upsample_common = {
        "spgim_version": __version__,
        "torch_version": torch.__version__,
        "source": {"upsampler": {"radius": upsampler.radius, "eps": upsampler.eps}},
        "export_size": [request.width, request.height],
        "profile": _size_profile(request),
        "frame_profile": {key: [w, h] for key, (h, w) in zip(("min", "opt", "max"), request.frame_sizes, strict=True)},
        # Counted at the export size and the opt frame size (it grows with the frame's pixels).
        "flops_frame_size": [frame_hw[1], frame_hw[0]],
        "exported_at": common["exported_at"],
        "host": common["host"],
    }

    def record(path: Path, branch: str, fmt: str, precision: str, extra: dict[str, Any]) -> None:
        if branch == UPSAMPLE:
            frame_flops = upsample_flops(request.height, request.width, *frame_hw, upsampler.radius)
            facts = {"flops_per_frame": frame_flops, **upsample_common}
        else:
            facts = {"flops_per_frame": flops[branch], **common}
        description = {
            "branch": branch,
            "format": fmt,
            "precision": precision,
            **specs[branch].describe(DTYPE_NAMES[precision]),
            **facts,
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
    _write_upsampler(request, specs[UPSAMPLE], upsampler, examples[UPSAMPLE], onnx_files, record)
    _write_manifest(request)
    if "pt2" in request.formats:
        _write_pt2(request, specs, models, examples, record)
        _write_manifest(request)
    if "engine" in request.formats:
        _build_engines(request, specs, onnx_files, record)
        _write_manifest(request)
    return request.artifacts


def _write_upsampler(
    request: ExportRequest,
    spec: GraphSpec,
    model: torch.nn.Module,
    example: tuple,
    onnx_files: dict[tuple[str, str, str], Path],
    record: Any,
) -> None:
    """The upsample graph as TorchScript, portable ONNX and OpenVINO IR, fp32, for the formats asked for.

    One portable ONNX graph serves ``onnx``, ``onnx-trt`` (it has no attention), OpenVINO IR and the engine;
    it is written with the frame's height and width dynamic even without ``--dynamic``.
    """
    if "torchscript" in request.formats:
        path = request.out / f"{UPSAMPLE}.torchscript.pt"
        trace_torchscript(model, spec, example, path)
        record(path, UPSAMPLE, "torchscript", "fp32", {})
    if not {"onnx", "onnx-trt", "openvino", "engine"} & set(request.formats):
        return
    path = request.out / f"{UPSAMPLE}.onnx"
    # dynamic=True: the spec's dynamic axes hold batch and the working size only under --dynamic.
    export_onnx(model, spec, example, path, flavour="portable", opset=request.opset, dynamic=True)
    extra: dict[str, Any] = {"opset": request.opset, "onnx_flavour": "portable"}
    record(path, UPSAMPLE, "onnx", "fp32", extra)
    onnx_files[(UPSAMPLE, "onnx", "fp32")] = path
    if "openvino" in request.formats:
        _write_openvino_ir(request, UPSAMPLE, path, extra, record)


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
    _write_upsampler_pt2(request, specs[UPSAMPLE], models[UPSAMPLE], examples[UPSAMPLE], record)


def _write_upsampler_pt2(
    request: ExportRequest, spec: GraphSpec, model: torch.nn.Module, example: tuple, record: Any
) -> None:
    """The upsample graph's fp32 AOTInductor package (bf16 runs read it too)."""
    from .upsample_graph import export_upsample_pt2

    sizes = _size_profile(request)
    path = request.out / f"{UPSAMPLE}.fp32.pt2"
    facts = export_upsample_pt2(
        model,
        spec,
        example,
        path,
        min_hw=_height_width(sizes["min"]),
        max_hw=_height_width(sizes["max"]),
        frame_min_hw=request.frame_sizes[0],
        frame_max_hw=request.frame_sizes[2],
        dynamic=request.dynamic,
    )
    record(path, UPSAMPLE, "pt2", "fp32", facts)


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
                # Its file name only: the runtime loads the plugin from its own build, $SPGIM_TST_PLUGIN or
                # --plugin, never from a path an export folder names.
                extra["plugin"] = {**plugin_description(), "library": plugin.name}
            record(engine_path, branch, "engine", precision, extra)
    # The upsample engine: fp32 whatever the precisions, the frame's axes over their own profile.
    source = onnx_files[(UPSAMPLE, "onnx", "fp32")]
    profile = specs[UPSAMPLE].profile(
        _height_width(sizes["min"]),
        _height_width(sizes["opt"]),
        _height_width(sizes["max"]),
        request.batch,
        frame_hw=request.frame_sizes,
    )
    engine_path = request.out / f"{UPSAMPLE}.fp32.engine"
    facts = build_engine(
        source,
        engine_path,
        profile=profile,
        precision="fp32",
        workspace_gb=request.workspace_gb,
        plugin_library=None,
        timing_cache=request.out / "timing.cache",
    )
    record(
        engine_path, UPSAMPLE, "engine", "fp32", {**facts, "onnx_source": source.name, "optimization_profile": profile}
    )


def _stream_defaults(config: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """How the runtime streams this model unless told otherwise (the sidecar's ``stream`` entry): the
    configuration's design, and the blur of SPD's training target (the guide made from the previous alpha is
    blurred alike)."""
    sigma = source["spd_checkpoint"].get("mask_sigma")
    if sigma is None:  # checkpoints from before SPD recorded it: the recipe of its configuration
        sigma = RECIPES.get(config["name"], RECIPES["tiny"])["spd"]["mask_sigma"]
    return stream_defaults(config).overridden(guide_sigma=float(sigma)).record()


def _height_width(width_height: list[int]) -> tuple[int, int]:
    return width_height[1], width_height[0]


def _check_frame_sizes(frame_sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]) -> None:
    """Refuse a frame profile that is not min <= opt <= max with positive sides."""
    smallest, optimal, largest = frame_sizes
    for axis in (0, 1):
        if not 0 < smallest[axis] <= optimal[axis] <= largest[axis]:
            text = ", ".join(f"{w}x{h}" for h, w in frame_sizes)
            raise SpgimError(f"upsample frame sizes {text} must be positive and min <= opt <= max (WxH)")


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
