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
  spgim serve --model exported --repository models --address 0.0.0.0   # every interface: only when asked"""


def _serve(args: argparse.Namespace, server_options: ServerOptions, repository_root: Path) -> int:
    from .repository import write_repository
    from .server import TritonServer

    engine = EngineOptions.from_args(args)
    matting = MattingOptions.from_args(args)
    repository = write_repository(
        args.model,
        repository_root,
        backend=engine.backend,
        precision=engine.precision,
        instances=server_options.instances,
        work_size=matting.work_size,
        threads=engine.threads,
        upsampling=matting.upsampling,
        max_batch_size=server_options.max_batch,
        keyframe_interval=matting.keyframe_interval,
        sequence_idle_s=server_options.sequence_idle,
    )
    server = TritonServer(
        repository,
        http_port=server_options.http_port,
        grpc_port=server_options.grpc_port,
        metrics_port=server_options.metrics_port,
        address=server_options.address,
        binary=server_options.tritonserver,
        log_path=server_options.log,
        ready_timeout=server_options.ready_timeout,
    )
    with server:
        print(f"spgim serve: model repository {repository}", file=sys.stderr)
        print(f"http {server.http_url}")
        print(f"grpc {server.grpc_url}")
        print(f"metrics {server.metrics_url}")
        print(
            f"spgim serve: serving models 'spgim' and 'spgim_live' (Ctrl-C stops); server log {server.log_path}",
            file=sys.stderr,
        )
        sys.stdout.flush()
        while server.running:
            time.sleep(0.5)
        raise SpgimError(f"tritonserver stopped on its own: {server.log_tail()}; log: {server.log_path}")


def _run(args: argparse.Namespace) -> int:
    server_options = ServerOptions.from_args(args)
    EngineOptions.from_args(args)  # every value checked before the repository is written
    MattingOptions.from_args(args)
    if server_options.repository is not None:
        return _serve(args, server_options, server_options.repository)
    with tempfile.TemporaryDirectory(prefix="spgim-repository-") as folder:
        return _serve(args, server_options, Path(folder))


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
    parser.add_argument("--model", required=True, type=Path, help="spgim export folder")
    EngineOptions.add_arguments(parser, only=("backend", "precision", "threads"))
    MattingOptions.add_arguments(parser, only=("work_size", "keyframe_interval", "upsampling"))
    ServerOptions.add_arguments(parser)
    parser.set_defaults(handler=_run)
