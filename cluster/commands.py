"""``spgim batch``: the command-line face of :func:`spgim.cluster.batch.run_batch`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from spgim.streaming.options import LOCAL_ENGINE, EncodeOptions, EngineOptions, MattingOptions, SourceOptions

from .options import BatchOutputs, ClusterOptions

EXAMPLE = """example:
  spgim batch clips/ --model exported --out matted
  spgim batch 'shoot/**/*.mov' list.txt --model exported --out matted --alpha mp4 --composite none
  spgim batch cameras.txt --model exported --out recordings --duration 3600 --ray 10.0.0.5:6379

INPUT: a video file, a folder (its videos, recursively), a glob, a .txt/.list file of paths and URLs (one per
line), a network URL or a webcam index. Outputs are named after the inputs (a/x.mp4 and b/x.mp4 become a_x.mp4
and b_x.mp4); a live input is recorded in segments (x.part001.mkv, ...). The ledger spgim-batch.jsonl in --out
records every input's attempts; a rerun skips what is done. Exit status: 0 all done (a live input without
--duration is done when Ctrl-C stops it), 1 any failed, 130 a recorded input stopped part-way."""


def _run(args: argparse.Namespace) -> int:
    from .batch import run_batch

    summary = run_batch(
        args.inputs,
        args.model,
        args.out,
        outputs=BatchOutputs.from_args(args),
        engine=EngineOptions.from_args(args),
        matting=MattingOptions.from_args(args),
        reading=SourceOptions.from_args(args),
        encoding=EncodeOptions.from_args(args),
        cluster=ClusterOptions.from_args(args),
        progress=not args.quiet and not args.json,
        log=(lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    elif not args.quiet:
        print(f"spgim batch: summary (run {summary.run}):\n{summary.table()}", file=sys.stderr)
    return summary.exit_code


def register(subparsers: Any) -> None:
    """Add ``batch`` to the ``spgim`` command."""
    parser = subparsers.add_parser(
        "batch",
        help="matte many files and streams on a Ray cluster (a local one by default)",
        description=(
            "One Ray job per input: recorded inputs are tasks retried on another worker when theirs is lost, live "
            "inputs are actors restarted on another node. Outputs appear under their final names only when whole."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders, globs, .txt lists, URLs")
    parser.add_argument("--model", required=True, help="spgim export folder (shared storage on a cluster)")
    parser.add_argument("--out", required=True, help="output folder (shared storage on a cluster)")
    for group in (BatchOutputs, EngineOptions, MattingOptions, EncodeOptions, SourceOptions, ClusterOptions):
        group.add_arguments(parser, only=LOCAL_ENGINE if group is EngineOptions else None)
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-input lines")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.set_defaults(handler=_run)
