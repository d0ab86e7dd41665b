"""Input specs: which kind of source a string names, and how to print it without its credentials."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
_SECRET_KEYS = re.compile(r"pass|pwd|token|secret|key|auth|sig", re.IGNORECASE)


def scheme(spec: str) -> str:
    """The URL scheme of ``spec`` in lower case ("" for a path)."""
    return urlsplit(spec).scheme.lower()


def is_network(spec: str) -> bool:
    """True for ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://`` and ``srt://`` URLs."""
    return scheme(spec) in NETWORK_SCHEMES


def is_webcam(spec: str) -> bool:
    """True for a webcam index such as ``0``."""
    return spec.isdigit()


def redact(spec: str) -> str:
    """``spec`` with user info and secret-looking query values replaced by ``***``."""
    if not is_network(spec):
        return spec
    parts = urlsplit(spec)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(message: str, spec: str) -> str:
    """``message`` with every occurrence of ``spec`` (and its user info) replaced by the redacted form."""
    if not is_network(spec):
        return message
    clean = message.replace(spec, redact(spec))
    userinfo = urlsplit(spec).netloc.rpartition("@")[0]
    return clean.replace(userinfo, "***") if userinfo else clean


def error_reason(error: BaseException, spec: str) -> str:
    """FFmpeg's (or the OS's) reason for ``error`` in one line, without ``spec``'s credentials.

    The reason, not ``str(error)``: PyAV's message repeats the URL it was given, user and password included.
    """
    text = getattr(error, "strerror", None) or str(error)
    return scrub(str(text).strip().rstrip("."), spec)
