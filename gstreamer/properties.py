"""The ``spgimmatte`` element's properties, and the settings a started element reads from them.

The engine's and the matting's properties are the fields of :class:`~spgim.streaming.options.EngineOptions` and
:class:`~spgim.streaming.options.MattingOptions` that ``spgim matte`` takes as flags: same names (``--work-size``
is ``work-size``), same help, same checks, same defaults, so that an option means one thing everywhere. A field
whose default is the export's (None) is a number property whose default, -1, means the same. The element's own
properties choose what it outputs and what the composite shows. Nothing here needs GStreamer: the element
(:mod:`spgim.gstreamer.element`) declares these to GObject, and the docs' property table is rendered from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

from spgim.errors import SpgimError
from spgim.option_groups import NUMBER, WHOLE, Flag, OptionGroup
from spgim.streaming.options import BACKGROUND, LOCAL_ENGINE, EngineOptions, MattingOptions, Outputs

from .formats import OUTPUT_FORMATS

THE_EXPORTS = -1  # a number property at this value takes the export's (the option field's None)
BLUR = "blur"  # the background: the frame itself, blurred
NO_BACKGROUND = "none"
DEFAULT_OUTPUT = "composite"
MAX_WHOLE = 2**31 - 1


@dataclass(frozen=True)
class ElementProperty:
    """One property of ``spgimmatte``.

    Attributes:
        name: GStreamer's name, e.g. ``work-size``.
        kind: ``str``, ``int``, ``float`` or ``bool``.
        default: the value before it is set; for a number, :data:`THE_EXPORTS` means the export's.
        blurb: what it does (``gst-inspect-1.0 spgimmatte`` shows it).
        group: the option group whose field it sets (None: the element's own).
        field: that field's name.
    """

    name: str
    kind: type
    default: str | int | float | bool
    blurb: str
    group: type[OptionGroup] | None = None
    field: str | None = None

    @property
    def minimum(self) -> int | float:
        """The smallest value GObject accepts: the field's own checks refuse the rest."""
        return THE_EXPORTS if self.default == THE_EXPORTS else 0

    @property
    def maximum(self) -> int | float:
        """The largest value GObject accepts (smoothing's upper bound is checked by the option group)."""
        return 1.0 if self.kind is float else MAX_WHOLE


def _from_group(group: type[OptionGroup], only: tuple[str, ...] | None = None) -> list[ElementProperty]:
    """The flag fields of ``group`` (``only`` these, where given) as properties."""
    found = []
    for item in fields(group):  # type: ignore[arg-type]
        spec: Flag | None = item.metadata.get("flag")
        if spec is None or (only is not None and item.name not in only):
            continue
        kind = {WHOLE: int, NUMBER: float}.get(spec.kind, str) if spec.kind is not None else bool
        blurb = spec.help.replace("{default}", str(item.default))
        default: str | int | float | bool = cast(str | int | float | bool, item.default)
        if item.default is None:  # the export's: a number property at THE_EXPORTS
            default = float(THE_EXPORTS) if kind is float else THE_EXPORTS
            blurb += f"; {THE_EXPORTS}: the export's"
        found.append(ElementProperty(spec.name.lstrip("-"), kind, default, blurb, group, item.name))
    return found


def _background_default() -> str:
    """What ``spgim matte`` composites over unless told otherwise."""
    return str(next(item.default for item in fields(Outputs) if item.name == "background"))


PROPERTIES: tuple[ElementProperty, ...] = (
    ElementProperty("model", str, "", "the spgim export folder (required)"),
    *_from_group(EngineOptions, tuple(name for name in LOCAL_ENGINE if name != "batch")),
    *_from_group(MattingOptions),
    ElementProperty(
        "output",
        str,
        DEFAULT_OUTPUT,
        "alpha (GRAY8), rgba (the frame with the alpha as its alpha plane) or composite (RGB, the subject over "
        f"the background) (default {DEFAULT_OUTPUT})",
    ),
    ElementProperty(
        "background",
        str,
        _background_default(),
        f"{BACKGROUND['flag'].help}; {BLUR}: the frame itself, blurred; {NO_BACKGROUND}: no composite "
        "(output alpha or rgba only)",
    ),
    ElementProperty("post-messages", bool, True, "post an spgimmatte-frame message on the bus for every frame"),
)


@dataclass(frozen=True)
class ElementSettings:
    """What a started element runs: the export, its engine and matting options, the output and the background.

    Attributes:
        model: the export folder.
        engine: which engine runs the model (local only: an element runs the model in its own process).
        matting: working size, keyframes, smoothing, upsampling; None values are the export's.
        output: one of :data:`OUTPUT_FORMATS`.
        background: :data:`BLUR`, :data:`NO_BACKGROUND`, or what :class:`spgim.streaming.composite.Background`
            takes (green, #RRGGBB, an image or a video file).
    """

    model: Path
    engine: EngineOptions
    matting: MattingOptions
    output: str
    background: str

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> ElementSettings:
        """The settings from property values by name (a property absent is its default).

        Raises:
            SpgimError: one line naming the property whose value is wrong.
        """
        given = {prop.name: values.get(prop.name, prop.default) for prop in PROPERTIES}
        model = str(given["model"] or "").strip()
        if not model:
            raise SpgimError("model is not set: give model=<an spgim export folder>")
        output = str(given["output"]).strip().lower()
        if output not in OUTPUT_FORMATS:
            raise SpgimError(f"output={given['output']!r} is not one of {', '.join(OUTPUT_FORMATS)}")
        background = str(given["background"]).strip()
        if background.lower() in (BLUR, NO_BACKGROUND):
            background = background.lower()
        if output == "composite" and background == NO_BACKGROUND:
            raise SpgimError(
                f"output=composite needs a background (green, #RRGGBB, {BLUR}, or an image or video file), "
                f"not {NO_BACKGROUND}"
            )
        options: dict[type[OptionGroup], dict[str, Any]] = {EngineOptions: {}, MattingOptions: {}}
        for prop in PROPERTIES:
            if prop.group is not None and prop.field is not None:
                value = given[prop.name]
                the_exports = prop.default == THE_EXPORTS and value == THE_EXPORTS
                options[prop.group][prop.field] = None if the_exports else value
        groups = {}
        for group, values in options.items():
            try:
                groups[group] = group(**values)
            except SpgimError as error:
                named = [
                    f"{p.name}={given[p.name]}" for p in PROPERTIES if p.group is group and given[p.name] != p.default
                ]
                raise SpgimError(f"bad property value ({', '.join(named)}): {error}") from None
        engine, matting = groups[EngineOptions], groups[MattingOptions]
        assert isinstance(engine, EngineOptions) and isinstance(matting, MattingOptions)
        return cls(Path(model), engine, matting, output, background)


TYPE_NAMES = {str: "string", int: "integer", float: "double", bool: "boolean"}  # as gst-inspect-1.0 says


def property_table() -> str:
    """The properties as a Markdown table (docs/gstreamer.md shows it)."""
    lines = ["| property | type | default | what it does |", "| --- | --- | --- | --- |"]
    for prop in PROPERTIES:
        default = prop.default
        if isinstance(default, bool):
            shown = "true" if default else "false"
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
        blurb = prop.blurb.replace("|", "\\|")
        lines.append(f"| `{prop.name}` | {TYPE_NAMES[prop.kind]} | {f'`{shown}`' if shown else '(none)'} | {blurb} |")
    return "\n".join(lines)
