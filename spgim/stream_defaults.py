"""``StreamDefaults``: how the runtime streams an export unless told otherwise, and what each configuration records.

One record, five values (working size, keyframe interval, keyframe ramp, smoothing, guide blur), in one place
for every stage: a model configuration carries its design as its ``stream`` section (so its checkpoints do),
``spgim export`` writes it into every SPD and SPGM sidecar (:meth:`StreamDefaults.record`), the runtime reads it
back (:meth:`StreamDefaults.from_record`) and lays the caller's options over it (:meth:`StreamDefaults.overridden`),
and the command-line help states it (:func:`stated_defaults`). Every value is checked here, once, into one
:class:`~spgim.errors.SpgimError` line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from spgim.errors import SpgimError


@dataclass(frozen=True)
class StreamDefaults:
    """How frames are matted in stream order.

    Attributes:
        work_size: the longer side of the working resolution the model sees (both sides rounded to
            multiples of 32, aspect kept); at least 32.
        keyframe_interval: SPD every this many frames (and on scene cuts), SPGM on every frame guided by the
            previous alpha; 0 runs SPD on every frame.
        keyframe_ramp: frames over which a keyframe's correction is phased in (one more SPGM run per keyframe,
            capped at the interval); 0 or 1 switches at once.
        smoothing: motion-gated temporal smoothing of the alpha in [0, 1): where the frame is still, this much of
            the previous alpha is kept; 0 is off.
        guide_sigma: Gaussian sigma, in mask pixels, of the guide made from the previous alpha: the blur of
            SPD's training target (``mask_sigma``), so an export takes it from the SPD checkpoint.
    """

    work_size: int = 512
    keyframe_interval: int = 0
    # Reference clips, shipped live pair, K = 8 (docs/notebook.md): hard switch dtSSD 9.51 MAE 0.0875; over 4 frames
    # 8.64 / 0.0897; over 8 frames 8.41 / 0.0929.
    keyframe_ramp: int = 4
    smoothing: float = 0.0
    guide_sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.work_size < 32:
            raise SpgimError(f"work size must be at least 32 pixels, got {self.work_size}")
        if self.keyframe_interval < 0:
            raise SpgimError(f"keyframe interval must be 0 (every frame) or more, got {self.keyframe_interval}")
        if self.keyframe_ramp < 0:
            raise SpgimError(f"keyframe ramp must be 0 (switch at once) or more frames, got {self.keyframe_ramp}")
        if not 0.0 <= self.smoothing < 1.0:
            raise SpgimError(f"smoothing must be at least 0 and below 1, got {self.smoothing}")
        if not self.guide_sigma >= 0.0:
            raise SpgimError(f"guide sigma must be 0 (no blur) or more, got {self.guide_sigma}")

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None, where: str) -> StreamDefaults:
        """What a sidecar's ``stream`` entry or a configuration's ``stream`` section records; absent keys are
        the defaults above (exports made before a key existed). ``where`` names the record in a refusal."""
        record = record or {}
        present = {name: kind(record[name]) for name, kind in cls.record_types().items() if name in record}
        try:
            return cls(**present)
        except SpgimError as error:
            raise SpgimError(f"{where}: {error}") from None

    @classmethod
    def record_types(cls) -> dict[str, type]:
        """Each key of :meth:`record` and the JSON type of its value (the sidecar schema's ``stream`` entry)."""
        defaults = cls()
        return {item.name: type(getattr(defaults, item.name)) for item in fields(cls)}

    def record(self) -> dict[str, int | float]:
        """Every value by name, as a sidecar's ``stream`` entry holds them."""
        return asdict(self)

    def design(self) -> dict[str, int | float]:
        """The values a configuration chooses (its ``stream`` section): all but ``guide_sigma``, which is
        the SPD checkpoint's training blur."""
        return {name: value for name, value in self.record().items() if name != "guide_sigma"}

    def overridden(self, **given: int | float | None) -> StreamDefaults:
        """These defaults with the caller's values where given (None: keep the default), checked."""
        changes: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
        return replace(self, **changes)


# What each model configuration is designed to stream at (its ``stream`` section in spgim.train.config).
CONFIGURATION_STREAMS: dict[str, StreamDefaults] = {
    "paper": StreamDefaults(),
    # Its first reference run (128 px crops) matted the three 1280x720 reference clips far better at 320 than
    # at 512, SPD on every frame: IoU 0.71 / 0.00 / 0.73 against 0.37 / 0.01 / 0.55.
    "tiny": StreamDefaults(work_size=320),
    # The reference checkpoints matte the three reference clips as well at 320 (320x192 for 16:9) as at 384x224
    # (IoU 0.51/0.03/0.77 vs 0.48/0.05/0.77 at K=8), and the 720p job runs ~3 frames/s faster (README, "Live
    # matting on a CPU"); SPD on every 8th frame keeps 720p30 within two CPU cores.
    "live": StreamDefaults(work_size=320, keyframe_interval=8),
}


def stated_defaults(name: str) -> str:
    """What the configurations record for the value ``name``, as help text: ``512 for paper, 320 for tiny
    and live``, or ``4 for every configuration``."""
    by_value: dict[int | float, list[str]] = {}
    for configuration, defaults in CONFIGURATION_STREAMS.items():
        by_value.setdefault(getattr(defaults, name), []).append(configuration)
    if len(by_value) == 1:
        return f"{next(iter(by_value)):g} for every configuration"
    return ", ".join(f"{value:g} for {_listed(names)}" for value, names in by_value.items())


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
