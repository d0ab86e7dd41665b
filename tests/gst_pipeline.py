"""Run a GStreamer pipeline and print spgimmatte's bus messages as JSON lines; not a test module.

Runs under the system's ``python3`` (PyGObject and GStreamer's Python bindings come from Debian's packages), in the
environment ``spgim gst-env`` prints, as a GStreamer application using ``spgimmatte`` would. tests/test_gstreamer.py
starts it::

    /usr/bin/python3 tests/gst_pipeline.py "videotestsrc ! videoconvert ! spgimmatte model=m ! fakesink" \
        --frames 12 --seek-after 5

Each ``spgimmatte-*`` element message is one line ``{"name": ..., field: value, ...}``; an error is one line
``{"name": "error", "message": ..., "debug": ...}`` and the exit status 1. ``--seek-after N`` makes a flushing seek
back to the start once frame N is reported; ``--frames M`` stops the pipeline after M frames.
"""

from __future__ import annotations

import argparse
import json
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import Gst  # noqa: E402

PREFIX = "spgimmatte-"


def _fields(structure: Gst.Structure) -> dict[str, object]:
    fields: dict[str, object] = {"name": structure.get_name()}
    for index in range(structure.n_fields()):
        key = structure.nth_field_name(index)
        fields[key] = structure.get_value(key)
    return fields


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", help="a gst-launch-1.0 pipeline description")
    parser.add_argument("--frames", type=int, help="stop after this many spgimmatte-frame messages")
    parser.add_argument("--seek-after", type=int, help="a flushing seek to the start after this frame")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up")
    args = parser.parse_args()
    Gst.init(None)
    pipeline = Gst.parse_launch(args.pipeline)
    bus = pipeline.get_bus()
    pipeline.set_state(Gst.State.PLAYING)
    frames, seeked, status = 0, False, 0
    try:
        while True:
            message = bus.timed_pop_filtered(
                int(args.timeout * Gst.SECOND), Gst.MessageType.ELEMENT | Gst.MessageType.ERROR | Gst.MessageType.EOS
            )
            if message is None:
                print(json.dumps({"name": "error", "message": "timed out", "debug": ""}), flush=True)
                return 1
            if message.type == Gst.MessageType.EOS:
                return status
            if message.type == Gst.MessageType.ERROR:
                error, debug = message.parse_error()
                print(json.dumps({"name": "error", "message": error.message, "debug": debug or ""}), flush=True)
                return 1
            structure = message.get_structure()
            if structure is None or not structure.get_name().startswith(PREFIX):
                continue
            print(json.dumps(_fields(structure)), flush=True)
            if structure.get_name() != f"{PREFIX}frame":
                continue
            frames += 1
            if args.seek_after is not None and not seeked and structure.get_value("frame") >= args.seek_after:
                seeked = pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH, 0)
            if args.frames is not None and frames >= args.frames:
                return status
    finally:
        pipeline.set_state(Gst.State.NULL)


if __name__ == "__main__":
    sys.exit(main())
