"""Option groups: frozen dataclasses whose fields are also their command-line flags, each defined once.

A field's metadata (:func:`flag`) holds its flag, its help and how its text becomes a value; a group's
:meth:`OptionGroup.add_arguments` declares every flag on a parser and :meth:`OptionGroup.from_args` builds
the dataclass from what was parsed, so a command and the Python API take the same object. Flags are parsed
as text and converted here, and the dataclass checks its values itself: a bad value is one
:class:`~spgim.errors.SpgimError` line, never argparse's usage block.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from dataclasses import dataclass, fields
from typing import Any, Self

from spgim.errors import SpgimError


@dataclass(frozen=True)
class ValueType:
    """How a flag's text becomes its value: ``parse`` raises ValueError on text that is not ``expected``."""

    parse: Callable[[str], Any]
    expected: str

    def read(self, name: str, text: str) -> Any:
        """The value of ``text`` given to the flag ``name``, or one line saying what ``name`` must be."""
        try:
            return self.parse(text)
        except (ValueError, ArithmeticError):
            raise SpgimError(f"{name} must be {self.expected}, got {text!r}") from None


def seconds(text: str) -> float:
    """Seconds from ``12.5``, ``1:30`` or ``0:01:30``, not negative."""
    value = 0.0
    for part in text.split(":"):
        value = value * 60 + float(part)
    if not value >= 0:
        raise ValueError(text)
    return value


TEXT = ValueType(str, "text")
WHOLE = ValueType(int, "a whole number")
NUMBER = ValueType(float, "a number")
SECONDS = ValueType(seconds, "a time (seconds, M:SS or H:MM:SS)")


@dataclass(frozen=True)
class Flag:
    """How one field appears on the command line.

    Attributes:
        name: the flag, e.g. ``--work-size``.
        help: its help; ``{default}`` is replaced by the field's default.
        kind: how its text becomes the value; None for a switch (``store_true``).
        metavar: the value's name in the usage line (default: the flag's, ``--work-size WORK_SIZE``).
        repeat: the flag may be given several times (a list of values).
    """

    name: str
    help: str
    kind: ValueType | None = TEXT
    metavar: str | None = None
    repeat: bool = False


def flag(
    name: str, help: str, kind: ValueType | None = TEXT, *, metavar: str | None = None, repeat: bool = False
) -> dict[str, Flag]:
    """A field's metadata making it the flag ``name`` (see :class:`Flag`)."""
    return {"flag": Flag(name, help, kind, metavar, repeat)}


class OptionGroup:
    """Base of a frozen dataclass whose fields with :func:`flag` metadata are command-line flags."""

    @classmethod
    def add_arguments(
        cls, parser: argparse.ArgumentParser | argparse._ArgumentGroup, only: Collection[str] | None = None
    ) -> None:
        """Declare every flag of the group on ``parser`` (or an argument group of one); ``only``: just the flags
        of these fields (a command that has no use for the others), the others keep their defaults."""
        for item in fields(cls):  # type: ignore[arg-type]
            spec: Flag | None = item.metadata.get("flag")
            if spec is None or (only is not None and item.name not in only):
                continue
            default = "" if item.default is None else item.default
            help_text = spec.help.replace("{default}", f"{default:g}" if isinstance(default, float) else str(default))
            if spec.kind is None:
                parser.add_argument(spec.name, dest=item.name, action="store_true", default=None, help=help_text)
            else:
                action = "append" if spec.repeat else "store"
                metavar = spec.metavar or spec.name.lstrip("-").upper().replace("-", "_")
                parser.add_argument(spec.name, dest=item.name, action=action, metavar=metavar, help=help_text)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Self:
        """The group from parsed arguments: each flag given is converted, the others keep the field's default."""
        values: dict[str, Any] = {}
        for item in fields(cls):  # type: ignore[arg-type]
            spec: Flag | None = item.metadata.get("flag")
            given = getattr(args, item.name, None)
            if spec is None or given is None:
                continue
            if spec.kind is None:
                values[item.name] = bool(given)
            elif spec.repeat:
                values[item.name] = [spec.kind.read(spec.name, text) for text in given]
            else:
                values[item.name] = spec.kind.read(spec.name, given)
        return cls(**values)
