"""GStreamer's Python plugin loader imports this file from ``$GST_PLUGIN_PATH/python`` and registers ``spgimmatte``.

The loader runs the system's ``python3``, not the environment spgim is installed in: ``$SPGIM_SITE`` (set by
``eval "$(spgim gst-env)"``) names that environment's site folders, which are put first on the import path (their
``.pth`` files run, so an editable install is found too). This file never fails to import: the loader silently
leaves out an element whose file raises ("no element spgimmatte"). Where spgim cannot be loaded, it prints one line
saying why and registers a stand-in ``spgimmatte`` that fails with that line as its GStreamer error; the stand-in
has the element's description and pad templates (read from ``formats.py`` by its path), which GStreamer caches.
"""

from __future__ import annotations

import importlib.util
import os
import site
import sys
from pathlib import Path
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
from gi.repository import GLib, GObject, Gst, GstBase  # noqa: E402

NAME = "spgimmatte"


def _add_site_folders() -> None:
    """Put the folders of ``$SPGIM_SITE`` (and what their ``.pth`` files add) first on the import path."""
    before = list(sys.path)
    for folder in os.environ.get("SPGIM_SITE", "").split(os.pathsep):
        if folder:
            site.addsitedir(folder)
    added = [entry for entry in sys.path if entry not in before]
    sys.path[:] = added + before


def _formats() -> Any:
    """The package's ``formats.py`` (two folders up), loaded by its path; None where it cannot be read."""
    try:
        spec = importlib.util.spec_from_file_location("_spgimmatte_formats", Path(__file__).parents[2] / "formats.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    except Exception:
        return None


def _stand_in(problem: str) -> type:
    """An element that posts ``problem`` as its error when it starts."""
    formats = _formats()
    if formats is not None:
        metadata = formats.METADATA
        sink = Gst.Caps.from_string(formats.caps_text(formats.INPUT_FORMATS))
        src = Gst.Caps.from_string(formats.caps_text(list(formats.OUTPUT_FORMATS.values())))
    else:
        metadata, sink, src = ("spgim matting", "Filter/Effect/Video", problem, "spgim"), Gst.Caps.new_any(), None
    templates = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, sink),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, src or Gst.Caps.new_any()),
    )

    class SpgimMatteUnavailable(GstBase.BaseTransform):
        __gtype_name__ = "GstSpgimMatte"  # the element's own: instances are named spgimmatte0, ...
        __gstmetadata__ = metadata
        __gsttemplates__ = templates

        def do_start(self) -> bool:
            error = GLib.Error.new_literal(Gst.LibraryError.quark(), problem, int(Gst.LibraryError.INIT))
            self.post_message(Gst.Message.new_error(self, error, problem))
            return False

    GObject.type_register(SpgimMatteUnavailable)
    return SpgimMatteUnavailable


try:
    _add_site_folders()
    from spgim.gstreamer.element import SpgimMatte as _Element
except Exception as _failure:  # anything: the loader would drop the element without a word
    _where = os.environ.get("SPGIM_SITE") or "SPGIM_SITE is not set"
    _problem = " ".join(
        (
            f"{NAME}: cannot load spgim ({type(_failure).__name__}: {_failure}; site folders: {_where});"
            ' run eval "$(spgim gst-env)" with the spgim of the environment it is installed in'
        ).split()
    )
    print(_problem, file=sys.stderr)
    _Element = _stand_in(_problem)

__gstelementfactory__ = (NAME, Gst.Rank.NONE, _Element)
