"""The ``spgim`` command: one entry point, one subcommand per stage of the stack.

Each stage registers its subcommands through a ``register(subparsers)`` function in its
``commands`` module. Those modules import nothing heavy at import time, so ``spgim --help``
stays fast; the work happens inside the handlers.

The command layer is this module and the modules of :data:`COMMAND_MODULES` that live in ``spgim/``
itself (``spgim.eval_command``, ``spgim.demo``): commands that use several stages at once. They alone
of the shared ground may import a stage (tests/test_packaging.py checks it).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from spgim import __version__
from spgim.errors import SpgimError

# Stage modules that contribute subcommands, in the order they appear in ``spgim --help``.
COMMAND_MODULES = (
    "spgim.train.commands",
    "spgim.eval_command",
    "spgim.export.commands",
    "spgim.streaming.commands",
    "spgim.streaming.bench_command",
    "spgim.cluster.commands",
    "spgim.serving.commands",
    "spgim.gstreamer.commands",
    "spgim.demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="spgim",
        description="SPG-IM matting: train, export, benchmark and matte video.",
    )
    parser.add_argument("--version", action="version", version=f"spgim {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends a command as Ctrl-C does (``docker stop``, a service manager), outputs finalised.

    A matting job installs its own handlers while its pipeline runs (see :mod:`spgim.streaming.job`); this one
    covers the rest of the command, before and after, so that a late second signal is not a kill either.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``argv``, else the process's arguments); returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _sigterm_as_interrupt():
            result = args.handler(args)
    except SpgimError as error:
        print(f"spgim {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"spgim {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    finally:
        if argv is None and threading.current_thread() is threading.main_thread():
            # The process is exiting with its outputs finished: a second Ctrl-C or SIGTERM (docker stop after
            # a first) must not turn the exit into a kill or a traceback while the interpreter shuts down.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
