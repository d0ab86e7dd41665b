"""``spgim serve``: an export folder behind a real Triton Inference Server until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError
from spgim.streaming.options import EngineOptions, MattingOptions

from .options import ServerOptions

EXAMPLE = """example:
  spgim serve --model exported
  spgim serve --model exported --backend openvino --http-port 8000 --grpc-port 8001 --metrics-port 8002
  spgim serve --model exported --repository models --address 0.0.0.0   # every interface: only when asked
  spgim serve --model exported/triton                                   # the repository spgim export --triton wrote"""


# What shapes the models a repository holds: given with a repository that is already written, they are refused.
REPOSITORY_CHOICES = (
    (EngineOptions, ("backend", "precision", "threads")),
    (MattingOptions, ("work_size", "keyframe_interval", "keyframe_ramp", "smoothing", "upsampling")),
    (ServerOptions, ("instances", "max_batch", "sequence_idle", "repository")),
)


def _written_choices(args: argparse.Namespace) -> list[str]:
    """The flags given that only shape a repository being written (a value other than the default)."""
    given = []
    for group, names in REPOSITORY_CHOICES:
        values, defaults = group.from_args(args), group()
        given += [f"--{n.replace('_', '-')}" for n in names if getattr(values, n) != getattr(defaults, n)]
    return given


def _models_to_load(repository: Path, server_options: ServerOptions, models: dict[str, str]) -> list[str]:
    """The models of an existing repository this server loads: ``--models``, or every model it can run."""
    if server_options.models is not None:
        asked = [name.strip() for name in server_options.models.split(",") if name.strip()]
        unknown = [name for name in asked if name not in models]
        if unknown or not asked:
            raise SpgimError(
                f"--models: {', '.join(unknown) or 'none given'} not in {repository} (it holds {', '.join(models)})"
            )
        return asked
    if server_options.tritonserver is not None:
        return list(models)
    runnable = [name for name, kind in models.items() if kind == "python"]
    skipped = [f"{name} ({kind})" for name, kind in models.items() if kind != "python"]
    if not runnable:
        raise SpgimError(
            f"{repository} holds no Python-backend model, the only kind the nvidia-pytriton server runs; "
            "give --tritonserver PATH of a Triton with the other backends"
        )
    if skipped:
        print(
            f"spgim serve: not loading {', '.join(skipped)}: the nvidia-pytriton server has only the Python backend "
            "(--tritonserver PATH for a stock Triton)",
            file=sys.stderr,
        )
    return runnable


def _serve(args: argparse.Namespace, server_options: ServerOptions, repository: Path, models: list[str] | None) -> int:
    from .server import TritonServer

    server = TritonServer(
        repository,
        http_port=server_options.http_port,
        grpc_port=server_options.grpc_port,
        metrics_port=server_options.metrics_port,
        address=server_options.address,
        binary=server_options.tritonserver,
        log_path=server_options.log,
        ready_timeout=server_options.ready_timeout,
        models=models,
    )
    with server:
        print(f"spgim serve: model repository {repository}", file=sys.stderr)
        print(f"http {server.http_url}")
        print(f"grpc {server.grpc_url}")
        print(f"metrics {server.metrics_url}")
        print(
            f"spgim serve: serving {', '.join(models or ('spgim', 'spgim_live'))} (Ctrl-C stops); "
            f"server log {server.log_path}",
            file=sys.stderr,
        )
        sys.stdout.flush()
        while server.running:
            time.sleep(0.5)
        raise SpgimError(f"tritonserver stopped on its own: {server.log_tail()}; log: {server.log_path}")


def _run(args: argparse.Namespace) -> int:
    from .repository import repository_models, write_repository

    server_options = ServerOptions.from_args(args)
    engine = EngineOptions.from_args(args)  # every value checked before the repository is written
    matting = MattingOptions.from_args(args)
    models = repository_models(args.model)
    if models is not None:  # a repository already written (spgim export --triton, spgim serve --repository)
        given = _written_choices(args)
        if given:
            raise SpgimError(
                f"{', '.join(given)}: chosen when {args.model} was written; serve an export folder to choose them"
            )
        return _serve(args, server_options, args.model, _models_to_load(args.model, server_options, models))
    if server_options.models is not None:
        raise SpgimError("--models picks models of a model repository; an export folder gives spgim and spgim_live")
    if server_options.repository is not None:
        write_repository(args.model, server_options.repository, engine, matting, server_options)
        return _serve(args, server_options, server_options.repository, None)
    with tempfile.TemporaryDirectory(prefix="spgim-repository-") as folder:
        write_repository(args.model, Path(folder), engine, matting, server_options)
        return _serve(args, server_options, Path(folder), None)


def register(subparsers: Any) -> None:
    """Add ``serve`` to the ``spgim`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="serve an export folder through a Triton Inference Server",
        description=(
            "Write a Triton model repository for an export folder (model 'spgim': uint8 frames [N,H,W,3] RGB in, "
            "float32 alpha [N,H,W] out; model 'spgim_live': one frame [1,H,W,3] per request of a sequence, "
            "keyframed per sequence), start tritonserver on it and serve until Ctrl-C or SIGTERM. Every "
            "endpoint binds 127.0.0.1 unless --address says otherwise. Needs the server binary: "
            "pip install --no-deps nvidia-pytriton==0.7.0."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="spgim export folder (a repository is written for it), or a model repository already written "
        "(spgim export --triton's OUT/triton, or spgim serve --repository's)",
    )
    EngineOptions.add_arguments(parser, only=("backend", "precision", "threads"))
    MattingOptions.add_arguments(parser)
    ServerOptions.add_arguments(parser)
    parser.set_defaults(handler=_run)
