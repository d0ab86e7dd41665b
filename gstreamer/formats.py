"""What ``spgimmatte`` is to GStreamer's registry: its name, description and raw video formats.

Plain constants with no imports: the plugin shim (``plugin/python/spgimmatte.py``) reads this file by its path even
where spgim itself cannot be imported, so that its stand-in element registers the same description and pad
templates. GStreamer caches these in its registry; an element that changed them with the environment would show a
stale description until the cache is rebuilt.
"""

NAME = "spgimmatte"
# GStreamer's element metadata: long name, class, description, author.
METADATA = (
    "spgim matting",
    "Filter/Effect/Video",
    "Alpha matte of every frame with an spgim export: the alpha, the frame with its alpha, or a composite",
    "spgim",
)
INPUT_FORMATS = ("RGB", "RGBA", "BGRx")
# The GStreamer raw video format of each output.
OUTPUT_FORMATS = {"alpha": "GRAY8", "rgba": "RGBA", "composite": "RGB"}


def caps_text(formats: tuple[str, ...] | list[str]) -> str:
    """Raw video caps in any of ``formats``, as text for ``Gst.Caps.from_string``."""
    return f"video/x-raw, format=(string){{ {', '.join(formats)} }}"
