"""Input specs: which kind of source a string names, and how to print it without its secrets.

A URL may carry secrets in four places, and every message spgim prints shows it through :func:`redact`
(or :func:`scrub` for text that may quote it, such as FFmpeg's error strings):

- user info (``rtmp://user:pass@host/...``): replaced by ``***@``;
- query values whose key looks secret (``passphrase``, ``token``, ``key``, ``sig``...): ``***``;
- SRT's ``streamid``: only the access mode is kept (``publish:***``, ``#!::m=publish,r=***``), as
  servers put users, passwords and stream keys there;
- the stream key of an RTMP URL, its last path segment after the application
  (``rtmp://a.rtmp.youtube.com/live2/<key>``): ``rtmp://a.rtmp.youtube.com/live2/***``.

The host, port and the shape of the path stay, so a message still says where.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
_SECRET_KEYS = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred", re.IGNORECASE)
_MASK = "***"
_ANYWHERE = 8  # secrets this long are masked anywhere in a message; shorter ones only inside a URL


def scheme(spec: str) -> str:
    """The URL scheme of ``spec`` in lower case ("" for a path)."""
    return urlsplit(spec).scheme.lower()


def is_network(spec: str) -> bool:
    """True for ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://`` and ``srt://`` URLs."""
    return scheme(spec) in NETWORK_SCHEMES


def is_webcam(spec: str) -> bool:
    """True for a webcam index such as ``0``."""
    return spec.isdigit()


def _streamid_mode(value: str) -> str:
    """What of an SRT stream id may be shown: its access mode only."""
    if value.startswith("#!::"):  # SRT's access control syntax: comma-separated key=value pairs
        pairs = [item.partition("=") for item in value[4:].split(",")]
        return "#!::" + ",".join(f"{k}={v if k == 'm' else _MASK}" for k, _, v in pairs)
    mode, sep, _ = value.partition(":")  # MediaMTX's "publish:path:user:pass", "read:path"
    return f"{mode}:{_MASK}" if sep and mode in ("publish", "read", "playback") else _MASK


def _rtmp_key(parts: tuple[str, ...]) -> int | None:
    """The index of an RTMP URL's stream key among its path segments (after the application), or None."""
    return len(parts) - 1 if len(parts) >= 2 and parts[-1] else None


def redact(spec: str) -> str:
    """``spec`` with its secrets (see the module's docstring) replaced by ``***``; a path is returned as is."""
    if not is_network(spec):
        return spec
    parts = urlsplit(spec)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_MASK}@" + netloc.rsplit("@", 1)[1]
    path = parts.path
    if parts.scheme.lower() in ("rtmp", "rtmps"):
        segments = tuple(path.lstrip("/").split("/"))
        key = _rtmp_key(segments)
        if key is not None:
            path = "/" + "/".join((*segments[:key], _MASK))
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [
            (k, _streamid_mode(v) if k.lower() == "streamid" else _MASK if _SECRET_KEYS.search(k) else v)
            for k, v in pairs
        ]
        query = urlencode(masked, safe="*:#!=,")
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def _streamid_secrets(value: str) -> set[str]:
    """The parts of an SRT stream id that :func:`_streamid_mode` hides."""
    if value.startswith("#!::"):
        return {v for k, _, v in (item.partition("=") for item in value[4:].split(",")) if k != "m"} | {value}
    fields = value.split(":")
    if len(fields) > 1 and fields[0] in ("publish", "read", "playback"):
        return set(fields[2:]) | {":".join(fields[1:])}
    return {value}


def secrets(spec: str) -> list[str]:
    """Every secret ``spec`` holds (user, password, secret query values, stream id, RTMP key), longest first."""
    if not is_network(spec):
        return []
    parts = urlsplit(spec)
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found.add(userinfo)
        found.update(userinfo.split(":", 1))
    if parts.scheme.lower() in ("rtmp", "rtmps"):
        segments = tuple(parts.path.lstrip("/").split("/"))
        key = _rtmp_key(segments)
        if key is not None:
            found.add(segments[key])
    for k, v in parse_qsl(parts.query, keep_blank_values=True):
        if k.lower() == "streamid":
            found.update(_streamid_secrets(v))
        elif _SECRET_KEYS.search(k):
            found.add(v)
    variants = {form for secret in found for form in (secret, unquote(secret), quote(secret, safe=""))}
    return sorted((s for s in variants if s), key=len, reverse=True)


def scrub(message: str, spec: str) -> str:
    """``message`` with ``spec`` shown redacted and every secret of ``spec`` replaced by ``***``, wherever it is.

    A secret shorter than :data:`_ANYWHERE` characters (a stream named ``stream``, a user ``admin``) is replaced
    only where it follows ``/``, ``:``, ``=`` or ``@`` as in a URL, so that ordinary words stay readable.
    """
    if not is_network(spec):
        return message
    clean = message.replace(spec, redact(spec))
    for secret in secrets(spec):
        if len(secret) >= _ANYWHERE:
            clean = clean.replace(secret, _MASK)
        else:
            clean = re.sub(rf"(?<=[/:=@]){re.escape(secret)}(?![\w.~-])", _MASK, clean)
    return clean


def error_reason(error: BaseException, spec: str | None = None) -> str:
    """FFmpeg's (or the OS's) reason for ``error`` in one line, without ``spec``'s secrets.

    The reason, not ``str(error)``: PyAV's message repeats the URL it was given, user and password included.
    """
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    line = " ".join(str(text).split()).rstrip(".")
    return scrub(line, spec) if spec else line
