"""``spgimmatte``: a GStreamer video filter that mattes every frame with an spgim export.

A :class:`GstBase.BaseTransform` with RGB, RGBA or BGRx in and GRAY8 (``output=alpha``), RGBA (``rgba``) or RGB
(``composite``) out, of the same size and frame rate; buffers keep their timestamps (PTS, DTS, duration), which
the base class copies. The model opens when the element starts (READY to PAUSED), with the properties of
:mod:`.properties`; frames are matted one at a time by :class:`.stream.MatteStream`. The keyframe state starts
again on new caps of another size or pixel format, on a flush, and on a buffer marked as a discontinuity.

On the bus: an ``spgimmatte-model`` element message once the model is open (``backend``, ``precision``,
``work-size``, ``keyframe-interval``, ``selection``, ``keep-freed-memory``), an ``spgimmatte-frame`` message per
frame (``frame``, ``keyframe``, ``latency-ms``, ``pts``; turned off by ``post-messages=false``) and an
``spgimmatte-reset`` message where the keyframe state was dropped (``frame``, the next frame's number, and
``reason``: ``caps``, ``flush`` or ``discont``). Every failure is a GStreamer error message with one line saying
what is wrong, never a Python traceback (for a failure that is no input's fault, the debug text says where it was
raised).

The element reports its processing time (the 90th percentile of recent frames, with a margin, only ever raised) as
latency, so that a live pipeline's sinks expect its frames that much later.

GStreamer's Python plugin loader imports this module through the shim in ``plugin/python``, under the system's
``python3`` (``eval "$(spgim gst-env)"`` points the shim at this install): PyGObject comes from the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import traceback
from collections import deque
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import gi
import numpy as np

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstBase, GstVideo  # noqa: E402

from spgim.errors import SpgimError  # noqa: E402

from .formats import INPUT_FORMATS, METADATA, OUTPUT_FORMATS, caps_text  # noqa: E402
from .properties import PROPERTIES, ElementProperty, ElementSettings  # noqa: E402

if TYPE_CHECKING:
    from .stream import MattedFrame, MatteStream

# Each input format's bytes per pixel, and OpenCV's conversion of its pixels to RGB (None: they are RGB). OpenCV, not
# numpy's channel indexing: at 1280x720 indexing with a list of channels costs 5-7 ms a frame, cvtColor 0.3 ms.
CHANNELS = {"RGB": (3, None), "RGBA": (4, cv2.COLOR_RGBA2RGB), "BGRx": (4, cv2.COLOR_BGRA2RGB)}
# The caps fields an output keeps from its input (the format changes; colorimetry and chroma siting go with it).
KEPT_FIELDS = ("width", "height", "framerate", "pixel-aspect-ratio", "interlace-mode", "multiview-mode")
LATENCY_MARGIN = 1.25  # the processing time is reported with this margin, so the latency is re-posted rarely
LATENCY_WINDOW = 30  # frames whose processing time the reported latency follows
LATENCY_SAMPLES = 10  # frames timed before the first report
WARMUP_FRAMES = 2  # the first frames' time (an engine's first runs) is not the element's latency
# glibc's mallopt parameters, and the values the element sets (see keep_freed_memory).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 512 << 20  # free memory at the top of a heap is given back to the kernel only past this
MMAP_THRESHOLD = 32 << 20  # blocks under this (any 4K frame's array) come from the heap, not a mapping of their own


SINK_CAPS = Gst.Caps.from_string(caps_text(INPUT_FORMATS))
SRC_CAPS = Gst.Caps.from_string(caps_text(list(OUTPUT_FORMATS.values())))


def _param_spec(prop: ElementProperty) -> tuple[Any, ...]:
    """The ``__gproperties__`` entry of ``prop``."""
    flags = GObject.ParamFlags.READWRITE
    if prop.kind is bool:
        return (bool, prop.name, prop.blurb, prop.default, flags)
    if prop.kind is str:
        return (str, prop.name, prop.blurb, prop.default, flags)
    return (prop.kind, prop.name, prop.blurb, prop.minimum, prop.maximum, prop.default, flags)


# GObject's type of each message field's Python value (a plain int would be a 32-bit gint).
FIELD_TYPES = {
    bool: GObject.TYPE_BOOLEAN,
    int: GObject.TYPE_UINT64,
    float: GObject.TYPE_DOUBLE,
    str: GObject.TYPE_STRING,
}


def _geometry(video: GstVideo.VideoInfo) -> tuple[int, int, str]:
    """What makes a frame another stream's: its width, height and pixel format."""
    return video.width, video.height, video.finfo.name


def _structure(name: str, fields: dict[str, bool | int | float | str]) -> Gst.Structure:
    """A structure named ``name`` holding ``fields`` (ints as guint64, floats as double)."""
    structure = Gst.Structure.new_empty(name)
    for key, value in fields.items():
        structure.set_value(key, GObject.Value(FIELD_TYPES[type(value)], value))
    return structure


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed frame-sized blocks for reuse instead of giving them back to the kernel.

    Every frame allocates about 10 MB of arrays at 1280x720 (the RGB copy, the upsampled alpha, the composite) in
    the streaming thread. Left to glibc's defaults, that thread's heap returns them to the kernel when they are freed
    and faults them back in on the next frame: 2,600 page faults a frame, 8 ms of system time on two cores, a fifth
    of the pipeline's time (scripts/bench_gstreamer.py; docs/gstreamer.md). The setting is the process's, so the
    host application keeps up to its peak heap too. Returns whether it was set (only glibc has it).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


class SpgimMatte(GstBase.BaseTransform):
    """The ``spgimmatte`` element (see the module's docstring)."""

    __gtype_name__ = "GstSpgimMatte"
    __gstmetadata__ = METADATA
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, SINK_CAPS),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, SRC_CAPS),
    )
    __gproperties__: ClassVar[dict[str, tuple[Any, ...]]] = {prop.name: _param_spec(prop) for prop in PROPERTIES}

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, Any] = {prop.name: prop.default for prop in PROPERTIES}
        self.stream: MatteStream | None = None  # while started
        self.caps: Gst.Caps | None = None
        self.refused: Gst.Caps | None = None  # the last caps configure refused
        self.video: Any = None  # the input's GstVideo.VideoInfo
        self.output_video: Any = None
        self.latency_ns = 0  # the processing latency reported to latency queries
        self.timings: deque[float] = deque(maxlen=LATENCY_WINDOW)  # recent frames' processing seconds
        self.srcpad.add_probe(Gst.PadProbeType.QUERY_UPSTREAM | Gst.PadProbeType.PULL, self._add_latency)

    # --- properties -------------------------------------------------------------------------------

    def do_get_property(self, spec: GObject.ParamSpec) -> Any:
        return self.values[spec.name]

    def do_set_property(self, spec: GObject.ParamSpec, value: Any) -> None:
        self.values[spec.name] = value

    # --- errors and messages ----------------------------------------------------------------------

    def _error(self, domain: Any, code: Any, text: str, debug: str = "") -> None:
        """Post a GStreamer error: ``text`` is one line; ``debug`` holds what only a developer needs."""
        line = " ".join(text.split()) or "matting failed"
        error = GLib.Error.new_literal(domain.quark(), line, int(code))
        self.post_message(Gst.Message.new_error(self, error, debug))

    def _failure(self, domain: Any, code: Any, failure: BaseException) -> None:
        """Post ``failure`` as an error: a :class:`SpgimError` as its line, anything else as its type and message,
        with where it was raised (file, line, function) as the debug text; never a whole traceback."""
        if isinstance(failure, SpgimError):
            self._error(domain, code, str(failure))
            return
        frames = traceback.extract_tb(failure.__traceback__)
        where = f"raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
        self._error(domain, code, f"{type(failure).__name__}: {failure}", where)

    def _post(self, name: str, fields: dict[str, bool | int | float | str]) -> None:
        self.post_message(Gst.Message.new_element(self, _structure(name, fields)))

    # --- start and stop ---------------------------------------------------------------------------

    def do_start(self) -> bool:
        try:
            from .stream import MatteStream

            self.stream = MatteStream(ElementSettings.from_values(self.values))
        except Exception as failure:
            self._failure(Gst.LibraryError, Gst.LibraryError.SETTINGS, failure)
            return False
        matter = self.stream.matter
        kept = keep_freed_memory()
        self._post(
            "spgimmatte-model",
            {
                "backend": str(matter.backend_name),
                "precision": str(matter.precision),
                "work-size": int(matter.work_size),
                "keyframe-interval": int(matter.keyframe_interval),
                "selection": str(matter.selection),
                "keep-freed-memory": kept,
            },
        )
        self.caps, self.refused, self.latency_ns = None, None, 0
        self.timings.clear()
        return True

    def do_stop(self) -> bool:
        if self.stream is not None:
            self.stream.close()
        self.stream = None
        return True

    # --- caps -------------------------------------------------------------------------------------

    def do_transform_caps(self, direction: Gst.PadDirection, caps: Gst.Caps, filter: Gst.Caps | None) -> Gst.Caps:
        if direction == Gst.PadDirection.SINK:
            output = str(self.values["output"]).strip().lower()
            formats = [OUTPUT_FORMATS[output]] if output in OUTPUT_FORMATS else list(OUTPUT_FORMATS.values())
        else:
            formats = list(INPUT_FORMATS)
        result = Gst.Caps.new_empty()
        for index in range(caps.get_size()):
            given = caps.get_structure(index)
            for name in formats:
                structure = Gst.Structure.new_empty("video/x-raw")
                structure.set_value("format", name)
                for field in KEPT_FIELDS:
                    if given.has_field(field):
                        structure.set_value(field, given.get_value(field))
                result = result.merge_structure(structure)
        return filter.intersect_full(result, Gst.CapsIntersectMode.FIRST) if filter is not None else result

    def do_get_unit_size(self, caps: Gst.Caps) -> tuple[bool, int]:
        info = GstVideo.VideoInfo.new_from_caps(caps)
        return (info is not None, info.size if info is not None else 0)

    def do_set_caps(self, incaps: Gst.Caps, outcaps: Gst.Caps) -> bool:
        video = GstVideo.VideoInfo.new_from_caps(incaps)
        output_video = GstVideo.VideoInfo.new_from_caps(outcaps)
        if video is None or output_video is None or self.stream is None:
            return False
        # A new size or pixel format is another stream; caps that only add or refine colorimetry, pixel aspect or
        # frame rate (a decoder re-sends them once it has parsed the stream) are the same one.
        if self.video is not None and _geometry(self.video) != _geometry(video):
            self._reset("caps")
        rate = Fraction(video.fps_n, video.fps_d) if video.fps_n > 0 and video.fps_d > 0 else None
        try:
            self.stream.configure(video.width, video.height, rate)
        except Exception as failure:
            if self.refused is None or not self.refused.is_equal(incaps):  # negotiation is retried: say it once
                self._failure(Gst.StreamError, Gst.StreamError.FORMAT, failure)
            self.refused = incaps
            return False
        self.caps, self.video, self.output_video = incaps, video, output_video
        return True

    # --- events and queries -----------------------------------------------------------------------

    def do_sink_event(self, event: Gst.Event) -> bool:
        if event.type == Gst.EventType.FLUSH_STOP:
            self._reset("flush")
        return GstBase.BaseTransform.do_sink_event(self, event)

    def _add_latency(self, pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        """On the way back of a latency query through the source pad: add this element's processing latency."""
        query = info.get_query()
        if query is not None and query.type == Gst.QueryType.LATENCY and self.latency_ns:
            live, least, most = query.parse_latency()
            most = most if most == Gst.CLOCK_TIME_NONE else most + self.latency_ns
            query.set_latency(live, least + self.latency_ns, most)
        return Gst.PadProbeReturn.OK

    def _reset(self, reason: str) -> None:
        if self.stream is not None and self.stream.reset():
            self._post("spgimmatte-reset", {"frame": int(self.stream.frames), "reason": reason})

    # --- frames -----------------------------------------------------------------------------------

    def do_transform(self, inbuf: Gst.Buffer, outbuf: Gst.Buffer) -> Gst.FlowReturn:
        if self.stream is None or self.video is None:
            self._error(Gst.CoreError, Gst.CoreError.NEGOTIATION, "no frame size was negotiated before the first frame")
            return Gst.FlowReturn.NOT_NEGOTIATED
        if inbuf.has_flags(Gst.BufferFlags.DISCONT):
            self._reset("discont")
        try:
            matted = self._matte(inbuf, outbuf)
        except Exception as failure:
            self._failure(Gst.StreamError, Gst.StreamError.FAILED, failure)
            return Gst.FlowReturn.ERROR
        self._account(matted.index, matted.latency_s)
        if self.values["post-messages"]:
            fields = {"frame": matted.index, "keyframe": matted.keyframe, "latency-ms": matted.latency_s * 1e3}
            self._post("spgimmatte-frame", {**fields, "pts": int(inbuf.pts)})
        return Gst.FlowReturn.OK

    def _matte(self, inbuf: Gst.Buffer, outbuf: Gst.Buffer) -> MattedFrame:
        """Matte ``inbuf`` into ``outbuf``."""
        assert self.stream is not None
        seconds = inbuf.pts / Gst.SECOND if inbuf.pts != Gst.CLOCK_TIME_NONE else None
        mapped, reading = inbuf.map(Gst.MapFlags.READ)
        if not mapped:
            raise SpgimError("cannot read the frame's memory")
        try:
            matted = self.stream.matte(self._rgb(reading.data), seconds)
        finally:
            inbuf.unmap(reading)
        mapped, writing = outbuf.map(Gst.MapFlags.WRITE)
        if not mapped:
            raise SpgimError("cannot write the output frame's memory")
        try:
            self._write(writing.data, matted.image)
        finally:
            outbuf.unmap(writing)
        return matted

    def _rgb(self, data: Any) -> np.ndarray:
        """The mapped frame as an RGB array of its own (the mapping ends after the call)."""
        video = self.video
        depth, conversion = CHANNELS[video.finfo.name]
        rows = np.ndarray((video.height, video.stride[0]), np.uint8, buffer=data)
        pixels = rows[:, : video.width * depth].reshape(video.height, video.width, depth)
        return pixels.copy() if conversion is None else cv2.cvtColor(pixels, conversion)  # arrays of their own

    def _write(self, data: Any, image: np.ndarray) -> None:
        """``image`` (uint8, a row per output row) into the mapped output frame, whose rows may be padded."""
        video = self.output_video
        rows = np.ndarray((video.height, video.stride[0]), np.uint8, buffer=data)
        rows[:, : image.size // video.height] = image.reshape(video.height, -1)

    def _account(self, index: int, latency_s: float) -> None:
        """Raise the reported latency to the recent frames' 90th percentile processing time (with a margin) where
        it has grown past it, and have the pipeline query it again; the first frames, which warm the engine up,
        are left out."""
        if index < WARMUP_FRAMES:
            return
        self.timings.append(latency_s)
        if len(self.timings) < LATENCY_SAMPLES:
            return
        typical_ns = int(float(np.percentile(self.timings, 90)) * Gst.SECOND)
        if typical_ns > self.latency_ns:
            self.latency_ns = int(typical_ns * LATENCY_MARGIN)
            self.post_message(Gst.Message.new_latency(self))


GObject.type_register(SpgimMatte)
