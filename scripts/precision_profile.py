"""Where reduced precision loses time: the share of SPD + SPGM time per model part, fp32 against bf16 and int8.

    .venv/bin/python scripts/precision_profile.py --config paper --size 512x512 --threads 2 \\
        --precisions fp32,bf16,int8 --engines openvino,torch --iters 3 --json profile.json

Random weights (time does not depend on them). Each branch runs on each engine in each precision; every
operation's time goes to one part of :data:`PARTS` (the rules are :data:`MODULE_PARTS` and the op lists
beside it), and the JSON holds, per engine x precision x branch, the total, the per-part time and share, and
for OpenVINO every layer (name, type, kernel, the precision its kernel ran in, time) and a count of executed
layers per kernel precision (fp32 islands in a bf16 run show up there). stdout gets a table per engine:
part, its share in each precision, and each reduced precision's speed-up of that part. ResNet-50 on the same
engines, in the same precisions, gives the speed-up that a plain convolution network gets here, for comparison
(``--no-resnet`` leaves it out).

- **openvino**: each branch exported to portable ONNX as ``spgim export`` exports it
  (:func:`spgim.export.onnx_graphs.export_onnx`, the default attention form, fixed size), compiled for the CPU
  with the runtime backend's settings plus ``PERF_COUNT``, and read back with ``get_profiling_info()``.
  int8 is the branch's ONNX quantized by NNCF as ``spgim export --precision int8`` quantizes it
  (:func:`spgim.int8_build.quantize_openvino`, every operation in int8, calibrated on the example input: the
  ranges set accuracy, not speed), run with the int8 backend's precision hint.
  Layers are attributed by the module path the exporter writes into node names (``/encoder/layer1/...``);
  nodes without one (the fused ``ScaledDotProductAttention``, a ``Transpose``, the output nodes) by the original
  layers OpenVINO fused into them, else by the layer that ran before them.
- **torch**: the ops that the TorchScript backend runs: the eager model cast to the precision and
  channels-last, as :class:`spgim.runtime.backends.TorchScriptBackend` casts the traced model, inputs cast as it
  casts them. Eager stands in for TorchScript because a traced graph calls the same aten ops (the same oneDNN
  kernels) but the profiler cannot tell which module called them, and AOTInductor's generated kernels fuse
  ops across modules, so their time cannot be attributed to a part at all. Forward hooks on the parts' modules
  open ``torch.profiler.record_function`` ranges; each op's own (self) time goes to the part whose range
  encloses it, casts and resizes going to their own parts whatever module calls them.
  The torch engine has no int8 (the project's int8 runs on OpenVINO and ONNX Runtime): an int8 run there is
  skipped with that reason.

bf16 is skipped, with the reason in the JSON, where the CPU lacks native bf16 (``spgim.machine``); the JSON
records the CPU's flags. Bad options are one line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spgim.errors import SpgimError
from spgim.machine import cpu_facts, machine_facts, native_bf16_missing
from spgim.sizes import parse_size

ENCODER = "encoder convolutions"
TST = "tst attention"
AFT = "aft"
DECODER = "decoder"
RESIZE = "resize/upsample"
CASTS = "casts and reorders"
OTHER = "other"
PARTS = (ENCODER, TST, AFT, DECODER, RESIZE, CASTS, OTHER)
PART_NOTES = {
    ENCODER: "the ResNet/MobileNetV3 backbones: SPD.backbone and SPGM.encoder",
    TST: "SPGM's TST blocks: their 1x1 key/value convs, the kv pooling and the attention itself",
    AFT: "SPGM's decoder levels (AFT blocks) with their alpha heads, resizes excepted",
    DECODER: "SPD's ASPP and decoder, SPGM's bottleneck, stem fusion and recurrent units",
    RESIZE: "bilinear interpolations (mask to image size, x2 upsampling, resize_to in the AFT levels)",
    CASTS: "OpenVINO Reorder/Convert nodes; torch aten::to/_to_copy/contiguous/copy_/clone",
    OTHER: "the rest: the input normalisation, the branches' own concatenations, inputs and outputs",
}

# The one mapping from module paths to parts: the first component of a module's path below its branch
# (``encoder`` of ``spgm.encoder.layer1.0.conv1``, or of the ONNX node ``/encoder/layer1/layer1.0/conv1/Conv``).
# SPGM's TST blocks live in a ModuleDict: torch names them ``tst.res2``, the ONNX exporter ``/res2/...``.
MODULE_PARTS: dict[str, dict[str, str]] = {
    "spd": {"backbone": ENCODER, "aspp": DECODER, "decoder": DECODER, "normalize": OTHER},
    "spgm": {
        "encoder": ENCODER,
        "tst": TST,
        "res2": TST,
        "res3": TST,
        "res4": TST,
        "levels": AFT,  # DECODER where the configuration has no AFT (PlainBlock levels): see part_rules
        "bottleneck": DECODER,
        "stem_fuse": DECODER,
        "recurrent": DECODER,
        "normalize": OTHER,
    },
}
# Ops that get their own part wherever they run.
OPENVINO_CAST_TYPES = frozenset({"Reorder", "Convert"})
OPENVINO_RESIZE_TYPES = frozenset({"Interpolate"})
OPENVINO_ATTENTION_PREFIX = "ScaledDotProductAttention"
TORCH_CAST_OPS = frozenset({"aten::to", "aten::_to_copy", "aten::contiguous", "aten::copy_", "aten::clone"})
TORCH_RESIZE_PREFIXES = ("aten::upsample_", "aten::_upsample_")
RANGE_PREFIX = "part: "

ENGINES = ("openvino", "torch")
PRECISIONS = ("fp32", "bf16", "int8")
REDUCED = tuple(precision for precision in PRECISIONS if precision != "fp32")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TORCH_INT8_ABSENT = "torch has no int8 here: the project's int8 runs on OpenVINO and ONNX Runtime"
# Kernel precision tokens OpenVINO puts at the end of exec_type, in the spellings of its versions.
KERNEL_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16", "i8": "i8", "u8": "u8"}
KERNEL_PRECISIONS |= {"i32": "i32", "i64": "i64", "u1": "u1", "boolean": "boolean"}

Timings = dict[str, float]


def part_rules(config: dict[str, Any]) -> dict[str, dict[str, str]]:
    """:data:`MODULE_PARTS` for one configuration: SPGM's levels are AFT blocks only where ``use_aft`` is set."""
    rules = {branch: dict(table) for branch, table in MODULE_PARTS.items()}
    if not config["spgm"]["use_aft"]:
        rules["spgm"]["levels"] = DECODER
    return rules


def module_part(rules: dict[str, str], path: str) -> str | None:
    """The part of a module path (``encoder.layer1`` or ``/encoder/layer1/...``), None where no rule names it."""
    first = path.strip("/").replace("/", ".").split(".")[0]
    return rules.get(first)


# --- options ---------------------------------------------------------------------------------------------------


def _choices(text: str, known: tuple[str, ...], what: str) -> list[str]:
    """A comma-separated list of known names, in the order given, refused in one line otherwise."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise SpgimError(f"--{what} {text!r}: choose among {', '.join(known)} (comma-separated)")
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; sizes, engines and precisions are checked by :func:`checked_options`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="model configuration: paper, live or tiny (default paper)")
    parser.add_argument("--size", default="512x512", help="working size WxH, multiples of 32 (default 512x512)")
    parser.add_argument(
        "--precisions",
        default="fp32,bf16",
        help="fp32, bf16, int8 (openvino only), comma-separated (default fp32,bf16)",
    )
    parser.add_argument("--engines", default="openvino,torch", help="openvino and/or torch (default both)")
    parser.add_argument(
        "--kv-stride",
        type=int,
        default=0,
        help="SPGM's tst_kv_stride: SPD's feature pooled by this factor before the attention's keys and values "
        "(0: the configuration's own; default 0)",
    )
    parser.add_argument("--iters", type=int, default=3, help="profiled runs after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads; 0: one per physical core (default)")
    parser.add_argument("--json", type=Path, help="write the full report here")
    parser.add_argument(
        "--resnet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time ResNet-50 on the same engines for the reduced precisions' speed-up of a plain CNN (default on)",
    )
    return parser.parse_args(argv)


def checked_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options as values, or :class:`SpgimError` for the first one that is wrong."""
    from spgim.train.config import get_config

    if args.iters < 1:
        raise SpgimError(f"--iters {args.iters}: give at least 1")
    if args.kv_stride < 0:
        raise SpgimError(f"--kv-stride {args.kv_stride}: give 0 (the configuration's own) or a pooling factor >= 1")
    if args.threads < 0:
        raise SpgimError(f"--threads {args.threads}: give 0 (one per physical core) or more")
    return {
        "config": get_config(args.config, **({"spgm__tst_kv_stride": args.kv_stride} if args.kv_stride else {})),
        "size": parse_size(args.size),
        "precisions": _choices(args.precisions, PRECISIONS, "precisions"),
        "engines": _choices(args.engines, ENGINES, "engines"),
        "iters": args.iters,
        "threads": args.threads or cpu_facts()["physical_cores"],
    }


# --- the model and its inputs ----------------------------------------------------------------------------------


def build_branches(config: dict[str, Any], height: int, width: int) -> dict[str, tuple[nn.Module, tuple]]:
    """SPD and SPGM (random weights, eval) with fp32 example inputs: SPGM's are SPD's outputs, as exported."""
    from spgim.export.io_spec import recurrent_state, spd_spec
    from spgim.train.models import build_model

    torch.manual_seed(0)
    spd, spgm = build_model("spd", config).eval(), build_model("spgm", config).eval()
    (image,) = spd_spec(spd.feature_channels).dummy_inputs(height, width)
    state = recurrent_state(spgm)
    with torch.no_grad():
        features = spd(image)
    zeros = tuple(torch.zeros(t.shape(1, height, width)) for t in state)
    return {"spd": (spd, (image,)), "spgm": (spgm, (image, *features, *zeros))}


def graph_specs(config: dict[str, Any], spgm: nn.Module) -> dict[str, Any]:
    """The export specs (input and output names) of both branches."""
    from spgim.export.io_spec import recurrent_state, spd_spec, spgm_spec
    from spgim.train.models import guide_channels

    channels = guide_channels(config)
    return {"spd": spd_spec(channels), "spgm": spgm_spec(channels, recurrent_state(spgm))}


# --- attribution and summaries ---------------------------------------------------------------------------------


def part_summary(times: Timings) -> dict[str, Any]:
    """Total milliseconds and, for every part of :data:`PARTS`, its milliseconds and share of the total."""
    total = sum(times.values())
    return {
        "total_ms": total,
        "parts": {
            part: {"ms": times.get(part, 0.0), "share": times.get(part, 0.0) / total if total else 0.0}
            for part in PARTS
        },
    }


def add_times(into: Timings, more: Timings) -> None:
    for part, ms in more.items():
        into[part] = into.get(part, 0.0) + ms


def precision_totals(branches: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One precision's branches summed: what the table shows."""
    times: Timings = {}
    for record in branches.values():
        add_times(times, {part: value["ms"] for part, value in record["parts"].items()})
    return part_summary(times)


# --- OpenVINO --------------------------------------------------------------------------------------------------


def kernel_precision(exec_type: str) -> str:
    """The precision a kernel ran in, from its exec_type's last token (``brgconv_avx512_bf16`` -> ``bf16``)."""
    token = exec_type.rsplit("_", 1)[-1].lower()
    return KERNEL_PRECISIONS.get(token, "none" if exec_type == "undef" else token)


def reorder_kind(name: str) -> str:
    """``precision`` where a Reorder's name says it converts (``..._f32_bf16_...``), else ``layout``."""
    converts = ("_f32_bf16_", "_bf16_f32_", "_f32_f16_", "_f16_f32_")
    return "precision" if any(marker in name for marker in converts) else "layout"


def original_names(compiled: Any) -> dict[str, list[str]]:
    """Runtime node name -> the ONNX node names OpenVINO fused into it."""
    names = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        originals = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        names[op.get_friendly_name()] = [name for name in originals.split(",") if name]
    return names


def openvino_layer_part(item: Any, rules: dict[str, str], originals: list[str], previous: str) -> str:
    """The part of one profiled OpenVINO layer; ``previous`` is the part of the layer that ran before it."""
    if item.node_type in OPENVINO_CAST_TYPES:
        return CASTS
    if item.node_type in OPENVINO_RESIZE_TYPES:
        return RESIZE
    if item.node_name.startswith(OPENVINO_ATTENTION_PREFIX) or item.node_type == OPENVINO_ATTENTION_PREFIX:
        return TST
    for name in (item.node_name, *originals):
        if name.startswith("/"):
            return module_part(rules, name) or OTHER
    if item.node_type in ("Parameter", "Result"):
        return OTHER
    return previous


def profile_openvino_branch(
    onnx_path: Path, feed: dict[str, np.ndarray], rules: dict[str, str], *, precision: str, threads: int, iters: int
) -> dict[str, Any]:
    """Compile one branch with PERF_COUNT, run it ``iters`` times after a warm-up, attribute every layer of the
    fastest run (the least disturbed on a shared machine)."""
    from spgim.runtime.openvino_backend import PRECISION_HINTS, shared_core

    core = shared_core()
    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "PERF_COUNT": True,
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
    }
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    request = compiled.create_infer_request()
    request.infer(feed)
    runs = []
    for _ in range(iters):
        started = time.perf_counter()
        request.infer(feed)
        wall = (time.perf_counter() - started) * 1000
        runs.append((wall, list(request.get_profiling_info())))
    walls = [wall for wall, _ in runs]
    _, infos = min(runs, key=lambda run: sum(item.real_time.total_seconds() for item in run[1]))
    return openvino_record(infos, original_names(compiled), rules, walls)


def openvino_record(
    infos: list[Any], originals: dict[str, list[str]], rules: dict[str, str], walls: list[float]
) -> dict[str, Any]:
    """Per-layer list, per-part times, kernel precision counts and Reorder counts of one profiled run."""
    layers = []
    times: Timings = {}
    kernels: Counter[str] = Counter()
    reorders: Counter[str] = Counter()
    previous = OTHER
    for item in infos:
        part = openvino_layer_part(item, rules, originals.get(item.node_name, []), previous)
        previous = part
        ms = item.real_time.total_seconds() * 1000
        executed = str(item.status).endswith("EXECUTED") and "NOT_RUN" not in str(item.status)
        precision = kernel_precision(item.exec_type)
        layers.append(
            {
                "name": item.node_name,
                "type": item.node_type,
                "kernel": item.exec_type,
                "precision": precision,
                "executed": executed,
                "part": part,
                "ms": ms,
            }
        )
        times[part] = times.get(part, 0.0) + ms
        if executed:
            kernels[precision] += 1
            if item.node_type == "Reorder":
                reorders[reorder_kind(item.node_name)] += 1
    return {
        **part_summary(times),
        "wall_ms": min(walls),
        "wall_ms_runs": walls,
        "kernel_precisions": dict(kernels.most_common()),
        "executed_reorders": {"precision": reorders["precision"], "layout": reorders["layout"]},
        "layers": layers,
    }


def export_branches(
    branches: dict[str, tuple[nn.Module, tuple]], specs: dict[str, Any], folder: Path
) -> dict[str, Path]:
    """Each branch as portable ONNX (fixed size, the default attention form), the way ``spgim export`` writes it."""
    from spgim.export.onnx_graphs import export_onnx
    from spgim.export.plan import DEFAULT_OPSET

    paths = {}
    for branch, (model, example) in branches.items():
        paths[branch] = folder / f"{branch}.onnx"
        export_onnx(
            model, specs[branch], example, paths[branch], flavour="portable", opset=DEFAULT_OPSET, dynamic=False
        )
    return paths


def quantized_branches(
    paths: dict[str, Path], feeds: dict[str, dict[str, np.ndarray]], folder: Path
) -> dict[str, Path]:
    """Each branch's ONNX quantized by NNCF to an int8 OpenVINO IR as ``spgim export --precision int8`` writes it,
    every operation in int8, calibrated on the example input alone (the ranges set accuracy, not speed)."""
    from spgim.int8_build import QUANTIZERS

    quantized = {}
    for branch, path in paths.items():
        quantized[branch] = folder / f"{branch}.int8.xml"
        QUANTIZERS["openvino"](path, quantized[branch], [feeds[branch]], ())
    return quantized


def profile_openvino(
    branches: dict[str, tuple[nn.Module, tuple]],
    specs: dict[str, Any],
    rules: dict[str, dict[str, str]],
    options: dict[str, Any],
) -> dict[str, Any]:
    """Every precision of :func:`profile_openvino_branch` on both branches; bf16 skipped where not native."""
    from spgim.runtime.openvino_backend import openvino_unavailable

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="spgim-precision-profile-") as work:
        paths = export_branches(branches, specs, Path(work))
        feeds = {
            branch: {name: x.numpy() for name, x in zip(specs[branch].input_names, example, strict=True)}
            for branch, (_, example) in branches.items()
        }
        for precision in options["precisions"]:
            reason = openvino_unavailable(precision)
            if reason is not None:
                results[precision] = {"skipped": reason}
                continue
            graphs = quantized_branches(paths, feeds, Path(work)) if precision == "int8" else paths
            records = {}
            for branch, feed in feeds.items():
                records[branch] = profile_openvino_branch(
                    graphs[branch],
                    feed,
                    rules[branch],
                    precision=precision,
                    threads=options["threads"],
                    iters=options["iters"],
                )
            results[precision] = {**precision_totals(records), "branches": records}
    return results


# --- torch -----------------------------------------------------------------------------------------------------


def part_modules(model: nn.Module, rules: dict[str, str]) -> Iterator[tuple[str, nn.Module]]:
    """``(part, module)`` for the modules a part's range opens around; containers give their children."""
    for name, child in model.named_children():
        part = rules.get(name)
        if part is None:
            continue
        if isinstance(child, nn.ModuleDict | nn.ModuleList):
            yield from ((part, grandchild) for grandchild in child.children())
        else:
            yield part, child


@contextmanager
def part_ranges(model: nn.Module, rules: dict[str, str]) -> Iterator[None]:
    """Forward hooks that open a ``record_function`` range named after the part around each part module."""
    open_ranges: list[Any] = []
    handles = []

    def opener(part: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any) -> None:
            scope = torch.profiler.record_function(RANGE_PREFIX + part)
            scope.__enter__()
            open_ranges.append(scope)

        return hook

    def close(module: nn.Module, inputs: Any, output: Any) -> None:
        open_ranges.pop().__exit__(None, None, None)

    for part, module in part_modules(model, rules):
        handles.append(module.register_forward_pre_hook(opener(part)))
        handles.append(module.register_forward_hook(close))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def torch_event_part(event: Any) -> str:
    """The part of one profiler event: a cast or resize op on the way up to the nearest part range wins,
    else that range's part; outside every range, :data:`OTHER` (casts and resizes still their own)."""
    node = event
    while node is not None:
        name = node.name
        if name.startswith(RANGE_PREFIX):
            return name[len(RANGE_PREFIX) :]
        if name in TORCH_CAST_OPS:
            return CASTS
        if name.startswith(TORCH_RESIZE_PREFIXES):
            return RESIZE
        node = node.cpu_parent
    return OTHER


def torch_record(events: Any) -> dict[str, Any]:
    """Per-part self times of one profiled run, and its ops' self time per aten op name (the 25 largest)."""
    times: Timings = {}
    ops: Counter[str] = Counter()
    for event in events:
        ms = event.self_cpu_time_total / 1000
        part = torch_event_part(event)
        times[part] = times.get(part, 0.0) + ms
        if not event.name.startswith(RANGE_PREFIX):
            ops[event.name] += ms
    return {**part_summary(times), "ops_ms": dict(ops.most_common(25))}


def torch_cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An input as TorchScriptBackend hands it to its model: in the run's dtype, 4-D ones channels-last."""
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def profile_torch_branch(
    model: nn.Module, example: tuple, rules: dict[str, str], *, dtype: torch.dtype, iters: int
) -> dict[str, Any]:
    """One branch's ops: inputs cast, model run, outputs back to float32; ``iters`` runs after a warm-up, each
    profiled alone, the fastest kept (the least disturbed on a shared machine)."""

    def run() -> None:
        outputs = model(*(torch_cast(x, dtype) for x in example))
        for output in outputs if isinstance(outputs, tuple) else (outputs,):
            output.float()

    runs = []
    with torch.inference_mode(), part_ranges(model, rules):
        run()
        for _ in range(iters):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
                started = time.perf_counter()
                run()
                wall = (time.perf_counter() - started) * 1000
            runs.append((wall, torch_record(profiler.events())))
    _, fastest = min(runs, key=lambda run: run[1]["total_ms"])
    return {**fastest, "wall_ms": min(wall for wall, _ in runs), "wall_ms_runs": [wall for wall, _ in runs]}


def profile_torch(
    branches: dict[str, tuple[nn.Module, tuple]], rules: dict[str, dict[str, str]], options: dict[str, Any]
) -> dict[str, Any]:
    """Every precision of :func:`profile_torch_branch` on both branches; bf16 skipped where not native, int8
    always (:data:`TORCH_INT8_ABSENT`)."""
    torch.set_num_threads(options["threads"])
    results: dict[str, Any] = {}
    for precision in options["precisions"]:
        reason = _engine_refusal("torch", precision)
        if reason is not None:
            results[precision] = {"skipped": reason}
            continue
        dtype = TORCH_DTYPES[precision]
        records = {}
        for branch, (model, example) in branches.items():
            # A copy: Module.to converts in place, and the next precision needs the fp32 weights again.
            cast = copy.deepcopy(model).to(dtype).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            records[branch] = profile_torch_branch(cast, example, rules[branch], dtype=dtype, iters=options["iters"])
        results[precision] = {**precision_totals(records), "branches": records}
    return results


# --- ResNet-50 for comparison ----------------------------------------------------------------------------------


def resnet50_speedups(options: dict[str, Any]) -> dict[str, Any]:
    """ResNet-50 (random weights, batch 1, the profile's size) in each precision on each engine, by the
    ceiling runners of :mod:`spgim.runtime.ceilings` (int8 quantized as the model is): the fastest run's ms and
    each reduced precision's speed-up."""
    from spgim.runtime import ceilings

    height, width = options["size"]
    resnet = ceilings.ResNet50(height, width, 1)
    runners = {"openvino": ceilings.openvino, "torch": ceilings.torchscript("cpu")}
    results: dict[str, Any] = {}
    for engine in options["engines"]:
        times: dict[str, Any] = {}
        for precision in options["precisions"]:
            reason = _engine_refusal(engine, precision)
            if reason is not None:
                times[f"{precision}_skipped"] = reason
                continue
            run = runners[engine](resnet, ceilings.CeilingOptions(precision, threads=options["threads"]))
            times[f"{precision}_ms"] = _fastest_ms(run, options["iters"])
        for reduced in REDUCED:
            if "fp32_ms" in times and f"{reduced}_ms" in times:
                times[f"{reduced}_speedup"] = times["fp32_ms"] / times[f"{reduced}_ms"]
        results[engine] = times
    return results


def _engine_refusal(engine: str, precision: str) -> str | None:
    if engine == "openvino":
        from spgim.runtime.openvino_backend import openvino_unavailable

        return openvino_unavailable(precision)
    if precision == "int8":
        return TORCH_INT8_ABSENT
    return native_bf16_missing() if precision == "bf16" else None


def _fastest_ms(run: Callable[[], Any], iters: int) -> float:
    run()
    samples = []
    for _ in range(iters):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return min(samples)


# --- report ----------------------------------------------------------------------------------------------------


def speedups(engine_results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per reduced precision that ran beside fp32: fp32 time / its time, per part and in total (None where a side
    is zero)."""
    fp32 = engine_results.get("fp32", {})
    ratios: dict[str, dict[str, float | None]] = {}
    for reduced in REDUCED:
        fast = engine_results.get(reduced, {})
        if "parts" not in fp32 or "parts" not in fast:
            continue
        ratio: dict[str, float | None] = {}
        for part in PARTS:
            slow_ms, fast_ms = fp32["parts"][part]["ms"], fast["parts"][part]["ms"]
            ratio[part] = slow_ms / fast_ms if slow_ms and fast_ms else None
        ratio["total"] = fp32["total_ms"] / fast["total_ms"] if fast["total_ms"] else None
        ratios[reduced] = ratio
    return ratios


def table(engine: str, results: dict[str, Any], ratios: dict[str, dict[str, float | None]]) -> str:
    """The stdout table of one engine: part, its share in each precision, each reduced precision's speed-up."""
    precisions = [precision for precision in PRECISIONS if precision in results]

    def share(precision: str, part: str) -> str:
        record = results[precision]
        return f"{record['parts'][part]['share']:.1%}" if "parts" in record else "-"

    def ratio(precision: str, key: str) -> str:
        value = ratios.get(precision, {}).get(key)
        return f"{value:.2f}x" if value else "-"

    reduced = [precision for precision in precisions if precision in ratios]
    heads = [f"{p:>8}" for p in precisions] + [f"{p + ' speed-up':>14}" for p in reduced]
    lines = [f"{engine}: {'part':<22} {' '.join(heads)}"]
    indent = " " * (len(engine) + 2)
    for part in PARTS:
        cells = [f"{share(p, part):>8}" for p in precisions] + [f"{ratio(p, part):>14}" for p in reduced]
        lines.append(f"{indent}{part:<22} {' '.join(cells)}")
    totals = [f"{results[p]['total_ms']:.0f} ms" if "total_ms" in results[p] else "-" for p in precisions]
    cells = [f"{total:>8}" for total in totals] + [f"{ratio(p, 'total'):>14}" for p in reduced]
    lines.append(f"{indent}{'total':<22} {' '.join(cells)}")
    for precision in precisions:
        if "skipped" in results[precision]:
            lines.append(f"  {precision} skipped: {results[precision]['skipped']}")
    return "\n".join(lines)


def profile(options: dict[str, Any], resnet: bool) -> dict[str, Any]:
    """The whole report: machine, options, every engine x precision x branch, speed-ups, ResNet-50."""
    height, width = options["size"]
    config = options["config"]
    branches = build_branches(config, height, width)
    specs = graph_specs(config, branches["spgm"][0])
    rules = part_rules(config)
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": config["name"],
        "tst_kv_stride": config["spgm"]["tst_kv_stride"],
        "size": {"height": height, "width": width},
        "threads": options["threads"],
        "iters": options["iters"],
        "machine": machine_facts(),
        "native_bf16_missing": native_bf16_missing(),
        "parts": PART_NOTES,
        "part_rules": rules,
        "engines": {},
        "speedups": {},
    }
    for engine in options["engines"]:
        if engine == "openvino":
            report["engines"][engine] = profile_openvino(branches, specs, rules, options)
        else:
            report["engines"][engine] = profile_torch(branches, rules, options)
        report["speedups"][engine] = speedups(report["engines"][engine])
    if resnet:
        report["resnet50"] = resnet50_speedups(options)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = checked_options(args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's and TorchScript's deprecation notes
            report = profile(options, args.resnet)
    except SpgimError as error:
        print(f"precision_profile: {error}", file=sys.stderr)
        return 1
    height, width = options["size"]
    print(
        f"{report['config']} {width}x{height} (tst_kv_stride {report['tst_kv_stride']}), {options['threads']} threads,"
        f" fastest of {options['iters']} runs"
    )
    for engine in options["engines"]:
        print(table(engine, report["engines"][engine], report["speedups"][engine]))
    for engine, record in report.get("resnet50", {}).items():
        said = [f"{p} speed-up {record[p + '_speedup']:.2f}x" for p in REDUCED if p + "_speedup" in record]
        print(f"resnet-50 on {engine}: " + (", ".join(said) or "no reduced precision ran"))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
