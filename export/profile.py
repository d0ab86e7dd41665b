"""The working sizes an export accepts (min, opt, max), computed once per export from its configuration.

The runtime mattes each frame at its working size (:func:`spgim.sizes.working_size`): the longer side at the
configuration's ``stream.work_size``, both sides multiples of 32. An export's default size (``opt``: the size
the graphs are traced at, TensorRT optimises for and ``spgim matte --backend auto`` measures at) is that working
size for a 16:9 frame. With ``--dynamic`` the default bounds reach from half of ``opt`` (rounded down to a
multiple of 32) to double it, widened where needed to every working size of the common aspect ratios
(:data:`COMMON_FRAMES`), so a default export runs at its own stream defaults on each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from spgim.errors import SpgimError
from spgim.sizes import working_size

SIZE_MULTIPLE = 32
# One frame per common aspect ratio, (height, width), larger than any working size: the working size of each.
COMMON_FRAMES: dict[str, tuple[int, int]] = {
    "16:9": (2160, 3840),
    "4:3": (2160, 2880),
    "1:1": (2160, 2160),
    "3:4": (2880, 2160),
    "9:16": (3840, 2160),
}
# The aspect ratio whose working size is an export's default size.
DEFAULT_ASPECT = "16:9"


def _text(height_width: tuple[int, int]) -> str:
    return f"{height_width[1]}x{height_width[0]}"


@dataclass(frozen=True)
class SizeProfile:
    """The working sizes, (height, width), the exported graphs accept: ``min_hw`` to ``max_hw``, traced at ``opt_hw``.

    Without ``--dynamic`` all three are the export size.
    """

    min_hw: tuple[int, int]
    opt_hw: tuple[int, int]
    max_hw: tuple[int, int]

    def sidecar(self) -> dict[str, list[int]]:
        """The sidecar's ``profile``: ``{"min", "opt", "max"}`` as ``[width, height]``."""
        sizes = {"min": self.min_hw, "opt": self.opt_hw, "max": self.max_hw}
        return {key: [width, height] for key, (height, width) in sizes.items()}

    def accepts(self, height_width: tuple[int, int]) -> bool:
        """Whether a working size (height, width) lies within the bounds."""
        return all(low <= side <= high for low, side, high in zip(self.min_hw, height_width, self.max_hw, strict=True))

    def __str__(self) -> str:
        if self.min_hw == self.max_hw:
            return f"{_text(self.opt_hw)} only"
        return f"{_text(self.min_hw)}..{_text(self.max_hw)}, traced at {_text(self.opt_hw)}"


def stream_working_sizes(work_size: int) -> dict[str, tuple[int, int]]:
    """The working size (height, width) the runtime mattes each of :data:`COMMON_FRAMES` at, by aspect ratio."""
    return {aspect: working_size(height, width, work_size) for aspect, (height, width) in COMMON_FRAMES.items()}


def default_export_size(work_size: int) -> tuple[int, int]:
    """An export's default size (height, width): the working size of a 16:9 frame at ``work_size``."""
    return stream_working_sizes(work_size)[DEFAULT_ASPECT]


def size_profile(
    work_size: int,
    *,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    min_size: tuple[int, int] | None = None,
    max_size: tuple[int, int] | None = None,
) -> SizeProfile:
    """The profile of one export.

    Args:
        work_size: the configuration's ``stream.work_size`` (the longer side the runtime mattes at).
        size: the export size (height, width); None takes :func:`default_export_size`.
        dynamic: whether the graphs take other sizes than ``size``.
        min_size, max_size: with ``dynamic``, bounds (height, width) in place of the defaults.

    Raises:
        SpgimError: bounds given without ``dynamic``, or not ``min <= size <= max`` on both sides.
    """
    opt = size or default_export_size(work_size)
    if not dynamic:
        if min_size or max_size:
            raise SpgimError(
                "--min-size and --max-size bound a --dynamic export; without it the export takes --size only"
            )
        return SizeProfile(opt, opt, opt)
    streamed = list(stream_working_sizes(work_size).values())
    smallest = min_size or tuple(
        max(SIZE_MULTIPLE, min(side // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE, *(hw[axis] for hw in streamed)))
        for axis, side in enumerate(opt)
    )
    largest = max_size or tuple(max(side * 2, *(hw[axis] for hw in streamed)) for axis, side in enumerate(opt))
    # The default bounds hold the export size; given ones must.
    if min_size and not SizeProfile(min_size, opt, opt).accepts(opt):
        raise SpgimError(f"--min-size {_text(min_size)} is larger than the export size {_text(opt)}")
    if max_size and not SizeProfile(opt, opt, max_size).accepts(opt):
        raise SpgimError(f"--max-size {_text(max_size)} is smaller than the export size {_text(opt)}")
    return SizeProfile((smallest[0], smallest[1]), opt, (largest[0], largest[1]))


def stream_note(profile: SizeProfile, work_size: int) -> str:
    """One line: the working sizes of the common aspect ratios at ``work_size``, and which the profile leaves out."""
    sizes = stream_working_sizes(work_size)
    listed = ", ".join(f"{_text(hw)} ({aspect})" for aspect, hw in sizes.items())
    outside = [aspect for aspect, hw in sizes.items() if not profile.accepts(hw)]
    if not outside:
        return f"working sizes {profile}: holds the stream defaults' {listed} (work size {work_size})"
    remedy = "wider --min-size/--max-size" if profile.min_hw != profile.max_hw else "--dynamic"
    return (
        f"working sizes {profile}: leaves out the stream defaults' working size for {', '.join(outside)} "
        f"(work size {work_size}: {listed}); matte those at a --work-size inside it, or export with {remedy}"
    )


def default_profiles_table() -> str:
    """Per model configuration, its work size, default ``--size`` and ``--dynamic`` profile, as a Markdown table."""
    from spgim.train.config import MODEL_CONFIGS, get_config, stream_defaults

    aspects = " / ".join(COMMON_FRAMES)
    lines = [
        f"| configuration | stream.work_size | default --size | default --dynamic profile | working sizes {aspects} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in MODEL_CONFIGS:
        work_size = stream_defaults(get_config(name)).work_size
        profile = size_profile(work_size, dynamic=True)
        sizes = " / ".join(_text(hw) for hw in stream_working_sizes(work_size).values())
        bounds = f"{_text(profile.min_hw)}..{_text(profile.max_hw)}"
        lines.append(f"| {name} | {work_size} | {_text(profile.opt_hw)} | {bounds} | {sizes} |")
    return "\n".join(lines)
