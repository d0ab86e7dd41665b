"""``spgim export``: SPD and SPGM checkpoints to the formats of :data:`spgim.export.formats.FORMATS`.

Every artifact gets a JSON sidecar (:mod:`spgim.export.sidecar`) that the runtime checks before
the first frame. ``spgim-export.json`` in the output folder lists them all.

Beside SPD and SPGM, every format asked for also gets the ``upsample`` graph (guided upsampling of the
working-size alpha to the full-resolution frame, :mod:`spgim.train.models.upsample`): fp32 only, whatever
the precisions (fp16/bf16 runs read the fp32 upsampler), with the frame's height and width always dynamic.
It has no checkpoint: its sidecar's ``source`` is ``{"upsampler": {radius, eps}}``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from spgim import __version__
from spgim.errors import SpgimError
from spgim.train.checkpoint import load_checkpoint, load_model, weights_digest
from spgim.train.config import stream_defaults
from spgim.train.models import guide_channels
from spgim.train.models.upsample import DEFAULT_EPS, DEFAULT_RADIUS, GuidedUpsampler, upsample_flops
from spgim.train.recipes import RECIPES
from spgim.train.summary import model_summary

from .attention_nodes import DEFAULT_PORTABLE_ATTENTION, portable_attention
from .formats import FORMATS, INT8_PAIR, int8_origin
from .io_spec import FRAME_PROFILE_HW, recurrent_state, spd_spec, spgm_spec, upsample_spec
from .plan import DEFAULT_OPSET, DEFAULT_WORKSPACE_GB, ExportRequest, plan_export
from .profile import SizeProfile, size_profile, stream_note
from .sidecar import file_sha256, write_sidecar
from .writers import UPSAMPLE, ExportJob

__all__ = ["MANIFEST", "ExportRequest", "load_pair", "run_export"]

MANIFEST = "spgim-export.json"
# The graphs' input and output dtype per precision: an int8 graph quantizes inside and takes and gives float32.
DTYPE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32"}


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


def run_export(request: ExportRequest, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Export everything asked for; returns the artifact list also written to the manifest.

    Formats are written in :data:`~spgim.export.formats.FORMATS`' order, the manifest after each: without
    TensorRT or a GPU the other formats are on disk and listed when the engine step raises its one-line
    error (exit code 2).

    Args:
        request: what to export; refused in one line where it does not fit the format table
            (:func:`~spgim.export.plan.plan_export`) or the configuration's sizes.
        progress: called with a line saying what will be written, and one saying the sizes the export takes.
    """
    plan = plan_export(request)
    attention = request.attention or DEFAULT_PORTABLE_ATTENTION
    portable_attention(attention)
    frame_sizes = request.frame_sizes or FRAME_PROFILE_HW
    _check_frame_sizes(frame_sizes)
    spd, spgm, config, source = load_pair(request.spd, request.spgm)
    work_size = stream_defaults(config).work_size
    profile = size_profile(
        work_size, size=request.size, dynamic=request.dynamic, min_size=request.min_size, max_size=request.max_size
    )
    if progress is not None:
        progress(str(plan))
        progress(stream_note(profile, work_size))
    request.out.mkdir(parents=True, exist_ok=True)
    channels = guide_channels(config)
    upsampler = GuidedUpsampler(
        DEFAULT_RADIUS if request.upsample_radius is None else request.upsample_radius,
        DEFAULT_EPS if request.upsample_eps is None else request.upsample_eps,
    ).eval()
    height, width = profile.opt_hw
    frame_hw = frame_sizes[1]
    state = recurrent_state(spgm)
    specs = {
        "spd": spd_spec(channels),
        "spgm": spgm_spec(channels, state),
        UPSAMPLE: upsample_spec(dynamic=request.dynamic),
    }
    (image,) = specs["spd"].dummy_inputs(height, width, request.batch[1])
    with torch.no_grad():
        examples = {
            "spd": (image,),
            # A recurrent SPGM is traced with a stream's first state (zeros); its graph takes any state.
            "spgm": (image, *spd(image), *(torch.zeros(t.shape(len(image), height, width)) for t in state)),
            # Traced at the opt frame size, which differs from the working size: nothing ties the two.
            UPSAMPLE: specs[UPSAMPLE].dummy_inputs(height, width, request.batch[1], frame_hw=frame_hw),
        }
    job = ExportJob(
        out=request.out,
        models={"spd": spd, "spgm": spgm, UPSAMPLE: upsampler},
        specs=specs,
        examples=examples,
        profile=profile,
        frame_sizes=frame_sizes,
        dynamic=request.dynamic,
        batch=request.batch,
        opset=DEFAULT_OPSET if request.opset is None else request.opset,
        attention=attention,
        workspace_gb=DEFAULT_WORKSPACE_GB if request.workspace_gb is None else request.workspace_gb,
        plugin=request.plugin,
        calibration=request.calibration,
        accept_accuracy_loss=request.accept_accuracy_loss,
        int8_sources={
            fmt: {branch: int8_origin(fmt, branch) for branch in INT8_PAIR}
            for fmt, record in FORMATS.items()
            if "int8" in record.files and record.int8_from is None
        },
    )
    describe = _sidecar_facts(config, source, profile, upsampler, frame_sizes)
    started: set[str] = set()
    for fmt, branch, precision in plan.artifacts:
        record = FORMATS[fmt]
        if fmt not in started:
            if started:
                _write_manifest(request)
            started.add(fmt)
            if record.check is not None:
                record.check(job)
        path = request.out / record.file_name(branch, precision)
        origin = record.sources.get(branch)
        if precision == "int8":  # quantized from an fp32 graph, or built from another format's int8 file
            made_from: Path | None = job.written[int8_origin(fmt, branch)]
        elif origin is not None:
            made_from = job.written[(origin, branch, "fp32" if branch == UPSAMPLE else precision)]
        else:
            made_from = None
        extra = record.writer(job, branch, precision, path, made_from)
        description = {
            "branch": branch,
            "format": fmt,
            "precision": precision,
            **specs[branch].describe(DTYPE_NAMES[precision]),
            **describe(branch),
            **extra,
        }
        write_sidecar(path, description)
        job.written[(fmt, branch, precision)] = path
        request.artifacts.append({"branch": branch, "format": fmt, "precision": precision, "file": path.name})
    _write_manifest(request)
    return request.artifacts


def _sidecar_facts(
    config: dict[str, Any],
    source: dict[str, Any],
    profile: SizeProfile,
    upsampler: GuidedUpsampler,
    frame_sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
) -> Callable[[str], dict[str, Any]]:
    """What every sidecar of a branch records beside its format's own facts: versions, sizes, FLOPs, origin."""
    height, width = profile.opt_hw
    frame_hw = frame_sizes[1]
    flops = model_summary(config, height, width)["flops"]
    common = {
        "spgim_version": __version__,
        "torch_version": torch.__version__,
        "config": config,
        "source": source,
        "export_size": [width, height],
        "profile": profile.sidecar(),
        "stream": _stream_defaults(config, source),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
    }
    # The upsample graph has no checkpoint or model config; what it is made of is its radius and eps.
    upsample_common = {
        "flops_per_frame": upsample_flops(height, width, *frame_hw, upsampler.radius),
        "spgim_version": __version__,
        "torch_version": torch.__version__,
        "source": {"upsampler": {"radius": upsampler.radius, "eps": upsampler.eps}},
        "export_size": [width, height],
        "profile": profile.sidecar(),
        "frame_profile": {key: [w, h] for key, (h, w) in zip(("min", "opt", "max"), frame_sizes, strict=True)},
        # Counted at the export size and the opt frame size (it grows with the frame's pixels).
        "flops_frame_size": [frame_hw[1], frame_hw[0]],
        "exported_at": common["exported_at"],
        "host": common["host"],
    }

    def facts(branch: str) -> dict[str, Any]:
        return upsample_common if branch == UPSAMPLE else {"flops_per_frame": flops[branch], **common}

    return facts


def _stream_defaults(config: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """How the runtime streams this model unless told otherwise (the sidecar's ``stream`` entry): the
    configuration's design, and the blur of SPD's training target (the guide made from the previous alpha is
    blurred alike)."""
    sigma = source["spd_checkpoint"].get("mask_sigma")
    if sigma is None:  # checkpoints from before SPD recorded it: the recipe of its configuration
        sigma = RECIPES.get(config["name"], RECIPES["tiny"])["spd"]["mask_sigma"]
    return stream_defaults(config).overridden(guide_sigma=float(sigma)).record()


def _check_frame_sizes(frame_sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]) -> None:
    """Refuse a frame profile that is not min <= opt <= max with positive sides."""
    smallest, optimal, largest = frame_sizes
    for axis in (0, 1):
        if not 0 < smallest[axis] <= optimal[axis] <= largest[axis]:
            text = ", ".join(f"{w}x{h}" for h, w in frame_sizes)
            raise SpgimError(f"upsample frame sizes {text} must be positive and min <= opt <= max (WxH)")


def _write_manifest(request: ExportRequest) -> None:
    manifest = {"format": "spgim-export", "format_version": 1, "artifacts": request.artifacts}
    (request.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
