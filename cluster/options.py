"""The options only a batch has: which outputs every input gets (:class:`BatchOutputs`) and how the batch runs
on Ray (:class:`ClusterOptions`). The engine, matting, reading and encoding options are ``spgim matte``'s own
groups (:mod:`spgim.streaming.options`), declared once and shared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spgim.errors import SpgimError
from spgim.option_groups import WHOLE, OptionGroup, flag
from spgim.streaming.options import BACKGROUND, Outputs

from .inputs import BatchInput

FILE_FORMATS = {  # kind -> the formats it may be written in ("png": a folder of frames)
    "composite": ("mp4", "mkv", "mov", "webm", "png", "none"),
    "alpha": ("mp4", "mkv", "mov", "webm", "png"),
    "foreground": ("mov", "webm", "png"),
}
# A live input's segments: containers that still play when a lost node cuts them off (an .mp4 without its
# index does not), whatever was asked for files.
LIVE_FORMATS = {"mp4": "mkv", "mov": "mkv", "mkv": "mkv", "webm": "webm", "png": "png"}
LIVE_FOREGROUND = {"mov": "webm", "webm": "webm", "png": "png"}


@dataclass(frozen=True)
class BatchOutputs(OptionGroup):
    """What every input of a batch is matted into, in ``--out`` under a name derived from the input's.

    Attributes:
        composite: the composite's format (``mp4`` default, ``mkv``, ``mov``, ``webm``, ``png``, or ``none``).
        alpha: also write the alpha in this format (None: no alpha).
        foreground: also write the foreground with alpha in this format (None: none).
        background: behind the composite, as ``spgim matte --background``.
    """

    composite: str = field(
        default="mp4",
        metadata=flag("--composite", "composite of each input: mp4 (default), mkv, mov, webm, png (a folder), or none"),
    )
    alpha: str | None = field(
        default=None, metadata=flag("--alpha", "also write each alpha: mp4, mkv, mov, webm or png", metavar="FORMAT")
    )
    foreground: str | None = field(
        default=None,
        metadata=flag("--foreground", "also write each foreground with alpha: mov, webm or png", metavar="FORMAT"),
    )
    background: str = field(default="green", metadata=BACKGROUND)

    def __post_init__(self) -> None:
        for kind, value in self.asked().items():
            if value not in FILE_FORMATS[kind]:
                raise SpgimError(f"--{kind} must be one of {', '.join(FILE_FORMATS[kind])}, got {value!r}")
        if not self.asked():
            raise SpgimError("nothing to write: --composite none needs --alpha or --foreground")

    def asked(self) -> dict[str, str]:
        """Each kind written, and its format."""
        wanted = {"composite": self.composite, "alpha": self.alpha, "foreground": self.foreground}
        return {kind: value.lower() for kind, value in wanted.items() if value and value.lower() != "none"}

    def paths(self, item: BatchInput, folder: Path, segment: int | None = None) -> dict[str, Path]:
        """The final path of each output of ``item`` (for a live input, of its ``segment``, counted from 1)."""
        found = {}
        for kind, value in self.asked().items():
            if segment is not None:
                value = (LIVE_FOREGROUND if kind == "foreground" else LIVE_FORMATS)[value]
            stem = item.name if segment is None else f"{item.name}.part{segment:03d}"
            if value == "png":
                found[kind] = folder / f"{stem}-{kind}-frames"
            else:
                found[kind] = folder / (f"{stem}.{value}" if kind == "composite" else f"{stem}.{kind}.{value}")
        return found

    def outputs(self, paths: dict[str, Path]) -> Outputs:
        """The :class:`~spgim.streaming.options.Outputs` of one job writing ``paths``."""
        return Outputs(
            composite=(paths["composite"],) if "composite" in paths else (),
            alpha=paths.get("alpha"),
            foreground=paths.get("foreground"),
            background=self.background,
        )


@dataclass(frozen=True)
class ClusterOptions(OptionGroup):
    """How a batch runs on Ray.

    Attributes:
        ray: the address of a running cluster to join (None: start a local one for this batch, then stop it).
        cpus_per_job: CPUs Ray reserves for each input; the model is given as many threads unless ``--threads``
            says otherwise. One by default: a job decodes, mattes and encodes in overlapping threads, and on a
            2-core machine two one-CPU jobs at once finished a batch 1.28-1.38x sooner than two-CPU jobs one after the
            other (``scripts/batch_bench.py``, docs/benchmarks.md).
        retries: times an input is run again after its worker or node was lost.
        rerun: run every input again, ignoring what the ledger has as done.
    """

    ray: str | None = field(
        default=None,
        metadata=flag(
            "--ray",
            "join this Ray cluster (e.g. 10.0.0.5:6379, from `ray start --head`) and leave it running (default: "
            "start a local Ray for this batch and stop it at the end)",
            metavar="ADDRESS",
        ),
    )
    cpus_per_job: int = field(
        default=1,
        metadata=flag(
            "--cpus-per-job",
            "CPUs reserved for each input, and the model's threads (default {default}: the most files per minute; "
            "give a live stream 2)",
            WHOLE,
            metavar="N",
        ),
    )
    retries: int = field(
        default=3,
        metadata=flag(
            "--retries",
            "times an input is run again on another worker after its worker or node was lost (default {default}); "
            "an input that is itself bad fails at once",
            WHOLE,
        ),
    )
    rerun: bool = field(
        default=False,
        metadata=flag(
            "--no-resume",
            "run every input again (default: skip the inputs the ledger has as done whose outputs are in place)",
            None,
        ),
    )

    def __post_init__(self) -> None:
        if self.cpus_per_job < 1:
            raise SpgimError(f"--cpus-per-job must be at least 1, got {self.cpus_per_job}")
        if self.retries < 0:
            raise SpgimError(f"--retries must be 0 or more, got {self.retries}")
