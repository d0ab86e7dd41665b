"""GStreamer stage: the ``spgimmatte`` element and ``spgim gst-env`` (docs/gstreamer.md). Builds on spgim.streaming
and spgim.runtime only; only ``element.py`` needs GStreamer's Python bindings, which the system's Python has."""
