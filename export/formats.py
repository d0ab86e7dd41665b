"""The export formats: one record per ``--formats`` entry, read by the command line, the exporter and the docs.

Each record says which precisions the format is written in (and which without ``--precision``), the file of each
branch, what it is made from, which options change it, what its sidecars record beside the common fields, and the
function that writes it. Every format also gets the ``upsample`` graph, in fp32 whatever the precisions (fp16 and
bf16 runs read the fp32 upsampler): the files of the format's fp32 entry, with ``upsample`` as the branch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from . import writers
from .writers import UPSAMPLE, ArtifactKey, ExportJob, Writer

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BRANCHES = ("spd", "spgm", UPSAMPLE)
# Beside each format's own options, these change every format.
# The options of an int8 export (spgim.export.quantize), taken by the formats written in int8.
INT8_OPTIONS = ("--calibration", "--accept-accuracy-loss")
COMMON_OPTIONS = ("--size", "--dynamic", "--min-size", "--max-size", "--upsample-radius", "--upsample-eps")


@dataclass(frozen=True)
class ExportFormat:
    """One format ``spgim export`` writes.

    Attributes:
        name: its ``--formats`` name and the sidecars' ``format``.
        summary: what it is, one line for the help and the docs.
        files: per precision it is written in, the file name with ``{branch}`` for the branch.
        default_precisions: what it is written in without ``--precision``.
        branches: the branches it writes a file of; a runtime reads the others from ``sources``' format.
        sources: per branch, the format whose artifact of that branch it is made from (same precision; the upsample
            graph's in fp32), or read in place of its own where it writes no file of the branch.
        int8_from: where it takes int8 without quantizing itself, the format whose int8 files it is built from (the
            TensorRT engines from ``onnx-trt``'s QDQ graphs). Every other format that takes int8 quantizes the fp32
            SPD and SPGM graphs it is made from (its ``sources``', its own where it has none;
            :mod:`spgim.export.quantize`). An int8 precision writes both SPD and SPGM, whatever ``branches`` says:
            they are quantized and gated as a pair.
        options: the flags that change it (:data:`COMMON_OPTIONS` change every format).
        sidecar_fields: what its sidecars record beside the fields every sidecar has (``int8``, the quantization and
            its accuracy gate, on its int8 files only).
        writer: writes one file (see :mod:`spgim.export.writers`).
        check: run before its first file: what it needs on this machine, one line if it is missing.
    """

    name: str
    summary: str
    files: Mapping[str, str]
    default_precisions: tuple[str, ...]
    writer: Writer
    branches: tuple[str, ...] = BRANCHES
    sources: Mapping[str, str] = field(default_factory=dict)
    int8_from: str | None = None
    options: tuple[str, ...] = ()
    sidecar_fields: tuple[str, ...] = ()
    check: Callable[[ExportJob], None] | None = None

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions it is written in."""
        return tuple(self.files)

    def file_name(self, branch: str, precision: str) -> str:
        """The file of ``branch`` in ``precision``, e.g. ``spgm.fp16.onnx``."""
        return self.files[precision].format(branch=branch)


ONNX_FIELDS = ("opset", "onnx_flavour")
PT2_FIELDS = (
    *("compiler", "compile_seconds", "vec_isa", "inductor_options", "export_seconds", "io_dtype"),
    *("frame_dtype", "batch", "dynamic_dims", "package_sizes", "cpu", "cpu_flags"),
)
ENGINE_FIELDS = (
    *("tensorrt_version", "gpu", "compute_capability", "strongly_typed", "tf32", "workspace_gb"),
    *("onnx_source", "optimization_profile", "plugin"),
)

_RECORDS = (
    ExportFormat(
        name="torchscript",
        summary="torch.jit.trace of each branch, for libtorch (C++) users; its runtimes cast it to fp16 or bf16",
        files={"fp32": "{branch}.torchscript.pt"},
        default_precisions=("fp32",),
        writer=writers.write_torchscript,
    ),
    ExportFormat(
        name="onnx",
        summary="portable ONNX (standard ops, and com.microsoft attention with --attention mha) for ONNX Runtime",
        files={"fp32": "{branch}.onnx", "fp16": "{branch}.fp16.onnx", "int8": "{branch}.int8.onnx"},
        default_precisions=("fp32", "fp16"),
        writer=writers.write_onnx,
        options=("--opset", "--attention", *INT8_OPTIONS),
        sidecar_fields=(*ONNX_FIELDS, "attention", "int8"),
    ),
    ExportFormat(
        name="onnx-trt",
        summary="SPGM's ONNX with one TSTAttention plugin node per attention, TensorRT's input (SPD has no attention: "
        "its graph and the upsample graph are onnx's); int8: the QDQ pair TensorRT builds int8 engines from",
        files={"fp32": "{branch}.trt.onnx", "fp16": "{branch}.trt.fp16.onnx", "int8": "{branch}.trt.int8.onnx"},
        default_precisions=("fp32", "fp16"),
        writer=writers.write_onnx_trt,
        branches=("spgm",),
        sources={"spd": "onnx", UPSAMPLE: "onnx"},
        options=("--opset", *INT8_OPTIONS),
        sidecar_fields=(*ONNX_FIELDS, "plugin", "int8"),
    ),
    ExportFormat(
        name="openvino",
        summary="OpenVINO IR (.xml, and its .bin beside it) of the portable fp32 graph; OpenVINO casts it to bf16; "
        "int8: NNCF-quantized",
        files={"fp32": "{branch}.xml", "int8": "{branch}.int8.xml"},
        default_precisions=("fp32",),
        writer=writers.write_openvino,
        sources={"spd": "onnx", "spgm": "onnx", UPSAMPLE: "onnx"},
        options=("--opset", "--attention", *INT8_OPTIONS),
        sidecar_fields=(*ONNX_FIELDS, "attention", "onnx_source", "companions", "int8"),
    ),
    ExportFormat(
        name="pt2",
        summary="torch.export programs AOTInductor-compiled for this CPU (needs a C++ compiler to export, not to run)",
        files={"fp32": "{branch}.fp32.pt2", "bf16": "{branch}.bf16.pt2"},
        default_precisions=("fp32",),
        writer=writers.write_pt2,
        sidecar_fields=PT2_FIELDS,
        check=writers.check_pt2,
    ),
    ExportFormat(
        name="engine",
        summary="TensorRT engines built on this machine's GPU (needs TensorRT and the plugin library); written last",
        files={"fp32": "{branch}.fp32.engine", "fp16": "{branch}.fp16.engine", "int8": "{branch}.int8.engine"},
        default_precisions=("fp32", "fp16"),
        writer=writers.write_engine,
        sources={"spd": "onnx", "spgm": "onnx-trt", UPSAMPLE: "onnx"},
        int8_from="onnx-trt",
        options=("--opset", "--workspace", "--plugin", *INT8_OPTIONS),
        sidecar_fields=(*ENGINE_FIELDS, "int8"),
        check=writers.check_engine,
    ),
)
# In writing order: every format after the formats it is made from.
FORMATS: dict[str, ExportFormat] = {record.name: record for record in _RECORDS}


INT8_PAIR = ("spd", "spgm")


def int8_origin(fmt: str, branch: str) -> ArtifactKey:
    """What the int8 file of ``fmt``'s ``branch`` is made from: the int8 file of its ``int8_from`` format, or the
    fp32 graph it is quantized from (its source's, its own where it has none)."""
    record = FORMATS[fmt]
    if record.int8_from is not None:
        return (record.int8_from, branch, "int8")
    return (record.sources.get(branch, fmt), branch, "fp32")


def artifacts_to_write(precisions: Mapping[str, Sequence[str]]) -> list[ArtifactKey]:
    """Every (format, branch, precision) to write so that each format is written in its ``precisions``.

    With the artifacts each is made from (an engine's ONNX graphs, OpenVINO's portable graph, an int8 file's fp32
    graph) or reads in place of its own (``onnx-trt``'s SPD graph); the upsample graph in fp32. In writing order: by
    format as in :data:`FORMATS`, then precision, then branch.
    """
    wanted: set[ArtifactKey] = set()

    def need(fmt: str, branch: str, precision: str) -> None:
        record = FORMATS[fmt]
        precision = "fp32" if branch == UPSAMPLE else precision
        if precision == "int8":  # the quantized pair, both branches whatever the format's own (INT8_PAIR)
            wanted.add((fmt, branch, precision))
            need(*int8_origin(fmt, branch))
            return
        if branch in record.branches:
            wanted.add((fmt, branch, precision))
        if branch in record.sources:
            need(record.sources[branch], branch, precision)

    for fmt, chosen in precisions.items():
        for precision in chosen:
            for branch in BRANCHES:
                need(fmt, branch, precision)
    order = list(FORMATS)
    return sorted(wanted, key=lambda key: (order.index(key[0]), PRECISIONS.index(key[2]), BRANCHES.index(key[1])))


def precisions_by_format() -> str:
    """``torchscript fp32, onnx fp32/fp16, ...``: which format is written in which precisions."""
    return ", ".join(f"{name} {'/'.join(record.precisions)}" for name, record in FORMATS.items())


def _files(record: ExportFormat) -> str:
    def branches(precision: str) -> str:
        own = INT8_PAIR if precision == "int8" else record.branches  # an int8 precision writes the pair
        return "{branch}" if record.branches == BRANCHES else "/".join(own)

    return ", ".join(f"`{template.format(branch=branches(precision))}`" for precision, template in record.files.items())


def _made_from(record: ExportFormat) -> str:
    by_format: dict[str, list[str]] = {}
    for branch, fmt in record.sources.items():
        by_format.setdefault(fmt, []).append(branch)
    int8 = ""
    if "int8" in record.files:
        if record.int8_from is not None:
            int8 = f"; int8: built from {record.int8_from}'s int8 spd/spgm"
        else:
            quantized_from: dict[str, list[str]] = {}
            for branch in INT8_PAIR:
                quantized_from.setdefault(int8_origin(record.name, branch)[0], []).append(branch)
            int8 = "; int8: quantized from " + " and ".join(
                f"{fmt}'s fp32 {'/'.join(branches)}" for fmt, branches in quantized_from.items()
            )
    if not by_format:
        return "the model" + int8
    made = "; ".join(f"{fmt}'s {'/'.join(branches)}" for fmt, branches in by_format.items())
    # A format that writes no file of a branch reads the source's in its place.
    return (made if set(record.sources) <= set(record.branches) else f"the model; reads {made}") + int8


# The columns of the format table: heading -> the cell of a record.
COLUMNS: dict[str, Callable[[ExportFormat], str]] = {
    "format": lambda record: f"`{record.name}`",
    "precisions (default)": lambda record: f"{', '.join(record.precisions)} ({', '.join(record.default_precisions)})",
    "files": _files,
    "made from": _made_from,
    "options": lambda record: ", ".join(f"`{option}`" for option in record.options),
    "sidecar fields": lambda record: ", ".join(f"`{name}`" for name in record.sidecar_fields),
    "what": lambda record: record.summary,
}


def format_table(columns: Sequence[str] = tuple(COLUMNS)) -> str:
    """The formats as a Markdown table of ``columns`` (keys of :data:`COLUMNS`), for the docs and the help."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(COLUMNS[column](record) for column in columns) + " |" for record in FORMATS.values()]
    return "\n".join(lines)
