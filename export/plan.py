"""What ``spgim export`` was asked for, checked against the format table before anything is loaded or written.

The rule: each requested format is written in the requested precisions it takes (:data:`FORMATS`' ``files``), or
in its default precisions without ``--precision``. A format that takes none of the requested precisions, a
precision that no requested format takes, and an option that changes none of the requested formats are each
refused in one line, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError
from spgim.sizes import parse_size

from .formats import FORMATS, PRECISIONS, artifacts_to_write, precisions_by_format
from .writers import ArtifactKey

DEFAULT_OPSET = 17
DEFAULT_WORKSPACE_GB = 4.0


@dataclass(kw_only=True)
class ExportRequest:
    """What ``spgim export`` was asked for; None takes the default.

    Attributes:
        formats: keys of :data:`~spgim.export.formats.FORMATS`.
        precisions: of ``fp32``, ``fp16``, ``bf16``, ``int8``; None: each format's default precisions.
        height, width: the export size; None: the configuration's working size of a 16:9 frame
            (:func:`spgim.export.profile.default_export_size`).
        dynamic: the graphs take any working size within the profile (``min_size`` to ``max_size``).
        min_size, max_size: with ``dynamic``, (height, width) bounds in place of the defaults.
        batch: min, opt and max batch of the TensorRT profiles.
        opset: ONNX opset (17). workspace_gb: TensorRT's workspace (4 GB). plugin: the TST attention plugin library.
        attention: how the portable ONNX spells attention (``mha``).
        upsample_radius, upsample_eps: the upsample graph's guided filter (1 and 1e-4).
        frame_sizes: the upsample graph's frame (height, width): min, opt, max.
        calibration: int8: a folder of images to calibrate on; None: generated scenes.
        accept_accuracy_loss: int8: write a pair that misses the accuracy gate (recorded as such).
        artifacts: filled by the export: what was written.
    """

    spd: Path
    spgm: Path
    out: Path
    formats: list[str]
    precisions: list[str] | None = None
    height: int | None = None
    width: int | None = None
    dynamic: bool = False
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    batch: tuple[int, int, int] = (1, 1, 1)
    opset: int | None = None
    workspace_gb: float | None = None
    plugin: Path | None = None
    attention: str | None = None
    upsample_radius: int | None = None
    upsample_eps: float | None = None
    frame_sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None
    calibration: Path | None = None
    accept_accuracy_loss: bool = False
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int] | None:
        """The export size (height, width) asked for, or None for the configuration's."""
        return None if self.height is None or self.width is None else (self.height, self.width)


@dataclass(frozen=True)
class ExportPlan:
    """What an export writes.

    Attributes:
        precisions: per requested format, the precisions it is written in.
        artifacts: every (format, branch, precision) written, in writing order (with what the formats are made from).
    """

    precisions: dict[str, tuple[str, ...]]
    artifacts: list[ArtifactKey]

    def __str__(self) -> str:
        groups: dict[tuple[str, str], list[str]] = {}
        for fmt, branch, precision in self.artifacts:
            groups.setdefault((fmt, precision), []).append(branch)
        return "writes " + ", ".join(f"{fmt} {p} ({', '.join(branches)})" for (fmt, p), branches in groups.items())


def _names(option: str, given: list[str], known: tuple[str, ...]) -> list[str]:
    """``given`` without repeats, or one line naming what is unknown (or that nothing was named)."""
    unknown = [name for name in given if name not in known]
    if unknown or not given:
        what = f"names unknown {', '.join(unknown)}" if unknown else "names nothing"
        raise SpgimError(f"{option} {what}; choose from {', '.join(known)}")
    return list(dict.fromkeys(given))


def _precisions(formats: list[str], asked: list[str] | None) -> dict[str, tuple[str, ...]]:
    """Per format the precisions it is written in, or one line refusing what does not apply."""
    if asked is None:
        return {fmt: FORMATS[fmt].default_precisions for fmt in formats}
    asked = _names("--precision", asked, PRECISIONS)
    chosen = {fmt: tuple(p for p in FORMATS[fmt].precisions if p in asked) for fmt in formats}
    for fmt, precisions in chosen.items():
        if not precisions:
            taken = FORMATS[fmt].precisions
            raise SpgimError(
                f"{fmt} is written in {'/'.join(taken)} only, not in --precision {','.join(asked)}: add "
                f"{' or '.join(taken)} to --precision or leave {fmt} out of --formats "
                f"(precisions by format: {precisions_by_format()})"
            )
    for precision in asked:
        if not any(precision in precisions for precisions in chosen.values()):
            takers = [name for name, record in FORMATS.items() if precision in record.precisions]
            raise SpgimError(
                f"--precision {precision} applies to none of --formats {','.join(formats)}: {precision} is written "
                f"for {', '.join(takers)} (precisions by format: {precisions_by_format()})"
            )
    return chosen


def _check_options(request: ExportRequest, formats: list[str]) -> None:
    """Refuse a format option given for formats it does not change."""
    format_options = {
        "--opset": request.opset,
        "--attention": request.attention,
        "--workspace": request.workspace_gb,
        "--plugin": request.plugin,
        "--calibration": request.calibration,
        "--accept-accuracy-loss": request.accept_accuracy_loss or None,
    }
    for option, value in format_options.items():
        if value is not None and not any(option in FORMATS[fmt].options for fmt in formats):
            takers = [name for name, record in FORMATS.items() if option in record.options]
            raise SpgimError(f"{option} changes {', '.join(takers)} only, none of --formats {','.join(formats)}")
    radius, eps = request.upsample_radius, request.upsample_eps
    if (radius is not None and radius < 1) or (eps is not None and not eps > 0):
        got = ", ".join(f"{name} {value}" for name, value in (("radius", radius), ("eps", eps)) if value is not None)
        raise SpgimError(f"guided upsampling needs a radius of at least 1 and a positive eps, got {got}")


def plan_export(request: ExportRequest) -> ExportPlan:
    """Check ``request`` against the format table; what it writes, or one :class:`SpgimError` line.

    Checks the names, the precision rule (see the module), the options, and the export size's form; the size
    profile, which needs the configuration, is checked when the checkpoints are loaded.
    """
    formats = _names("--formats", request.formats, tuple(FORMATS))
    precisions = _precisions(formats, request.precisions)
    _check_options(request, formats)
    given = {"--calibration": request.calibration is not None, "--accept-accuracy-loss": request.accept_accuracy_loss}
    int8_options = [option for option, is_given in given.items() if is_given]
    if int8_options and not any("int8" in chosen for chosen in precisions.values()):
        raise SpgimError(f"{' and '.join(int8_options)} belong to an int8 export (--precision int8)")
    if (request.height is None) != (request.width is None):
        raise SpgimError("--height and --width go together; or give the size as --size WxH")
    if request.size is not None:
        parse_size(f"{request.width}x{request.height}")
    return ExportPlan(precisions, artifacts_to_write(precisions))
