"""``spgim gst-env``: the GStreamer stage's subcommand. Heavy imports happen inside the handler."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXAMPLE = """example:
  eval "$(spgim gst-env)"
  gst-inspect-1.0 spgimmatte
  gst-launch-1.0 filesrc location=clip.mp4 ! decodebin ! videoconvert ! spgimmatte model=exported \\
      output=composite background=beach.jpg ! videoconvert ! x264enc ! mp4mux ! filesink location=out.mp4"""


def _run(args: argparse.Namespace) -> int:
    from .environment import check_gstreamer, gst_environment, shell_lines, verify_element

    check_gstreamer(os.environ)
    variables = gst_environment(os.environ)
    verify_element(os.environ, variables)
    sys.stdout.write(shell_lines(variables))
    return 0


def register(subparsers: Any) -> None:
    """Add ``gst-env`` to the ``spgim`` command."""
    parser = subparsers.add_parser(
        "gst-env",
        help="print the shell variables that let GStreamer find the spgimmatte element",
        description=(
            "Print export lines for GST_PLUGIN_PATH, SPGIM_SITE and (unless set) GST_REGISTRY, for eval in a POSIX "
            "shell: GStreamer's Python plugin loader (Debian's gstreamer1.0-python3-plugin-loader) then finds "
            "spgimmatte, and spgimmatte finds this install of spgim. Checks first that gst-inspect-1.0 loads the "
            "element so. Run it, and GStreamer, outside an activated virtual environment (docs/gstreamer.md)."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=_run)
