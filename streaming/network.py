"""What spgim knows of a live network source before it decodes a frame: how long it may take to start,
which servers hold a connection through a publisher's absence, which failures are worth another
attempt, the host check and the demuxer options for low delay.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from spgim.errors import SpgimError

from .urls import is_network, scheme

# A live source's start-up budget, from the start of an open to its first picture. Cameras' "smart" H.264
# modes send a keyframe every 10 s, and a player that joins between two waits for the next: 10 s, plus
# 5 s for connecting (RTMP/SRT handshakes, RTSP's DESCRIBE/SETUP/PLAY, a remote server's round trips),
# probing (about 0.5 s, see demux_options) and a busy host.
STARTUP_TIMEOUT_S = 15.0
# Servers that keep a player connected while its publisher is away, and pass it the restarted publisher's
# stream from its first packet, a keyframe (measured: nginx-rtmp; srt-live-transmit relaying a publisher).
# A silent connection to one is waited on, up to the start-up budget, instead of being reopened after the
# stall timeout: a new connection would join after that keyframe and wait a whole keyframe interval for
# the next. RTSP servers drop a session's media with its publisher (RTSP::Server: the player's session
# gets nothing from the new publisher, DESCRIBE says 404 until it is back): RTSP is reopened at a stall.
HELD_SCHEMES = ("rtmp", "rtmps", "srt")
# FFmpeg errors on opening a live source that another attempt cannot mend: an unknown protocol or format,
# a malformed URL or option, refused credentials. Anything else (refused, 404 "not published yet", timeouts,
# I/O errors) may be a source that is not up yet, and is retried.
_FATAL_OPEN_ERRORS = (
    "ProtocolNotFoundError",
    "DemuxerNotFoundError",
    "DecoderNotFoundError",
    "OptionNotFoundError",
    "ArgumentError",
    "PermissionError",
    "HTTPBadRequestError",
    "HTTPUnauthorizedError",
    "HTTPForbiddenError",
)
_HOSTED_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "tcp", "srt")  # udp://@:port has no host


class SourceDownError(SpgimError):
    """A live source that is not reachable or not delivering now (refused, silent, stalled, ended): worth
    another attempt, unlike the other :class:`SpgimError` s of an open."""


def is_fatal_open_error(error: BaseException) -> bool:
    """Whether FFmpeg's ``error`` on opening a live source is one another attempt cannot mend."""
    return type(error).__name__ in _FATAL_OPEN_ERRORS


RTSP_TRANSPORTS = ("udp", "tcp")


def demux_options(spec: str, *, live: bool, rtsp_transport: str | None = None) -> dict[str, str]:
    """FFmpeg demuxer options for ``spec``: the RTSP transport, and low delay for live network sources.

    Live: no input buffering, and probing stops after 256 KiB or half a second of stream instead of 5 MB /
    5 s: enough for the one video stream a live source is read for, and start-up is what a viewer waits.
    Except RTMP: FFmpeg's FLV probe reads on until it has decoded a picture, from a keyframe, and without
    buffering it would drop that keyframe with the rest of what it probed: a player that joined between
    keyframes would wait a second keyframe interval (measured with nginx-rtmp, keyframes 10 s apart, joined
    2 s in: the first picture 18.4 s after the open instead of 8.9 s).
    """
    options: dict[str, str] = {}
    kind = scheme(spec)
    if rtsp_transport is not None:
        if rtsp_transport not in RTSP_TRANSPORTS:
            raise SpgimError(f"unknown RTSP transport {rtsp_transport!r}; choose {' or '.join(RTSP_TRANSPORTS)}")
        if kind in ("rtsp", "rtsps"):
            options["rtsp_transport"] = rtsp_transport
    if live and is_network(spec):
        options.update(probesize="262144", analyzeduration="500000")
        if kind not in ("rtmp", "rtmps"):
            options["fflags"] = "nobuffer"
    return options


def check_host(spec: str, name: str) -> None:
    """One line at once for a live URL whose host cannot exist: FFmpeg reports an unknown host as a plain
    I/O error, which would be retried like a server that is down."""
    kind = scheme(spec)
    if kind == "srt":
        return  # the SRT connection resolves its host itself, with the same distinction
    try:
        host = urlsplit(spec).hostname
    except ValueError:
        return  # a malformed URL: FFmpeg says so in one line (Invalid argument)
    if not host:
        if kind in _HOSTED_SCHEMES:
            raise SpgimError(f"cannot open {name}: the URL has no host")
        return
    try:
        socket.getaddrinfo(host, None)
    except socket.gaierror as error:
        # A name server that does not answer may answer later; a name that does not exist will not.
        if error.errno == socket.EAI_AGAIN:
            raise SourceDownError(f"cannot open {name}: {error.strerror}") from None
        raise SpgimError(f"cannot open {name}: no such host ({error.strerror})") from None
