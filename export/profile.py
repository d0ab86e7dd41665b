"""The working sizes an export accepts (min, opt, max), computed once per export.

An export's size (``opt``: the size the graphs are traced at, TensorRT optimises for and ``spgim matte --backend
auto`` measures at) is 512x512 unless given. With ``--dynamic`` the default bounds reach from half of ``opt``
(rounded down to a multiple of 32) to double it.
"""

from __future__ import annotations

from dataclasses import dataclass

from spgim.errors import SpgimError

SIZE_MULTIPLE = 32
DEFAULT_SIZE_HW = (512, 512)


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


def size_profile(
    *,
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    min_size: tuple[int, int] | None = None,
    max_size: tuple[int, int] | None = None,
) -> SizeProfile:
    """The profile of one export.

    Args:
        size: the export size (height, width); None takes 512x512.
        dynamic: whether the graphs take other sizes than ``size``.
        min_size, max_size: with ``dynamic``, bounds (height, width) in place of the defaults.

    Raises:
        SpgimError: bounds given without ``dynamic``, or not ``min <= size <= max`` on both sides.
    """
    opt = size or DEFAULT_SIZE_HW
    if not dynamic:
        if min_size or max_size:
            raise SpgimError(
                "--min-size and --max-size bound a --dynamic export; without it the export takes --size only"
            )
        return SizeProfile(opt, opt, opt)
    smallest = min_size or tuple(max(SIZE_MULTIPLE, side // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE) for side in opt)
    largest = max_size or tuple(side * 2 for side in opt)
    # The default bounds hold the export size; given ones must.
    if min_size and not SizeProfile(min_size, opt, opt).accepts(opt):
        raise SpgimError(f"--min-size {_text(min_size)} is larger than the export size {_text(opt)}")
    if max_size and not SizeProfile(opt, opt, max_size).accepts(opt):
        raise SpgimError(f"--max-size {_text(max_size)} is smaller than the export size {_text(opt)}")
    return SizeProfile((smallest[0], smallest[1]), opt, (largest[0], largest[1]))
