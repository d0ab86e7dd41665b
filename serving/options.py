"""``spgim serve``'s own options: where the server listens and how it is started (:class:`ServerOptions`).
Which engine runs the model and at what working size are ``spgim matte``'s option groups
(:mod:`spgim.streaming.options`), declared once and shared."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from spgim.errors import SpgimError
from spgim.option_groups import NUMBER, WHOLE, OptionGroup, ValueType, flag

PATH = ValueType(Path, "a path")


@dataclass(frozen=True)
class ServerOptions(OptionGroup):
    """A Triton server for one export folder.

    Attributes:
        http_port, grpc_port, metrics_port: the server's ports.
        address: the address every endpoint binds (127.0.0.1 unless asked; 0.0.0.0: every interface).
        instances: model instances, each its own engine (0: sized to the machine, see
            :func:`spgim.serving.repository.sized_to_the_machine`).
        max_batch: the most frames Triton's dynamic batcher gives one model call (``spgim_live``: sequences).
        sequence_idle: seconds after which ``spgim_live`` drops a sequence that sent no frame.
        repository: write the model repository here and keep it (None: a temporary folder).
        models: with a repository already written, the models to load (None: every model the server can run).
        tritonserver: the server executable (None: the one of the nvidia-pytriton wheel).
        log: the server's log file (None: in a temporary folder, kept).
        ready_timeout: seconds the server has to become ready.
    """

    http_port: int = field(default=8000, metadata=flag("--http-port", "HTTP/REST port (default {default})", WHOLE))
    grpc_port: int = field(default=8001, metadata=flag("--grpc-port", "gRPC port (default {default})", WHOLE))
    metrics_port: int = field(
        default=8002, metadata=flag("--metrics-port", "Prometheus metrics port (default {default})", WHOLE)
    )
    address: str = field(
        default="127.0.0.1",
        metadata=flag("--address", "address every endpoint binds (default {default}; 0.0.0.0: every interface)"),
    )
    instances: int = field(
        default=0,
        metadata=flag(
            "--instances",
            "model instances, each its own engine (default 0: one per CPU up to 4, each with CPUs / instances threads)",
            WHOLE,
        ),
    )
    max_batch: int = field(
        default=8,
        metadata=flag(
            "--max-batch", "the most frames the server's batcher gives one model call (default {default})", WHOLE
        ),
    )
    sequence_idle: float = field(
        default=60.0,
        metadata=flag(
            "--sequence-idle", "seconds spgim_live keeps a sequence that sends no frame (default {default})", NUMBER
        ),
    )
    repository: Path | None = field(
        default=None,
        metadata=flag(
            "--repository", "write the model repository here and keep it (default: a temporary folder)", PATH
        ),
    )
    models: str | None = field(
        default=None,
        metadata=flag(
            "--models",
            "with a model repository: comma list of its models to load (default: every model the server can run)",
        ),
    )
    tritonserver: Path | None = field(
        default=None,
        metadata=flag("--tritonserver", "the tritonserver executable (default: the nvidia-pytriton wheel's)", PATH),
    )
    log: Path | None = field(
        default=None, metadata=flag("--log", "the server's log file (default: in a temporary folder, kept)", PATH)
    )
    ready_timeout: float = field(
        default=120.0,
        metadata=flag("--ready-timeout", "seconds the server has to become ready (default {default})", NUMBER),
    )

    def __post_init__(self) -> None:
        for name in ("http_port", "grpc_port", "metrics_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise SpgimError(f"--{name.replace('_', '-')} must be between 1 and 65535, got {port}")
        if len({self.http_port, self.grpc_port, self.metrics_port}) < 3:
            raise SpgimError("--http-port, --grpc-port and --metrics-port must differ")
        if self.instances < 0:
            raise SpgimError(f"--instances must be 0 (sized to the machine) or more, got {self.instances}")
        if self.max_batch < 1:
            raise SpgimError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.sequence_idle <= 0:
            raise SpgimError(f"--sequence-idle must be more than 0, got {self.sequence_idle:g}")
        if self.ready_timeout <= 0:
            raise SpgimError(f"--ready-timeout must be more than 0, got {self.ready_timeout:g}")
