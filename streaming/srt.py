"""SRT through the system's libsrt: PyAV's FFmpeg build has no SRT, so a caller socket in live mode is
opened here (ctypes) and handed to PyAV as a file object carrying MPEG-TS, read or written.

URL options follow FFmpeg's ``srt://host:port?streamid=...&passphrase=...&latency=MICROSECONDS``;
``mode=caller`` is the only mode (spgim connects to a server such as srt-live-transmit, a media server or OBS).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from spgim.errors import SpgimError

from .urls import redact

# Debian/Ubuntu name the library by flavour and ABI (libsrt1.5-gnutls, libsrt1.4-openssl...); libsrt.so is the
# unversioned development link, which may point to any release: every candidate is checked before use.
_NAMES = (
    *(f"libsrt{flavour}.so.{abi}" for abi in ("1.5", "1.4") for flavour in ("", "-gnutls", "-openssl")),
    "libsrt.so",
)
# 1.4.2 is the first release with srt_getversion, so the first whose version can be checked; the functions,
# option numbers and error codes used here are the same in srt.h from 1.4.2 to 1.5.x (1.5.1 is the one tested).
# A 2.x may renumber them: it is refused rather than misconfigured.
MIN_VERSION = (1, 4, 2)
INSTALL_HINT = (
    "srt:// needs libsrt 1.4.2 or a later 1.x "
    "(Debian: apt install libsrt1.5-gnutls; PyAV's FFmpeg is built without SRT)"
)
TS_PACKET = 188  # one MPEG-TS packet
PAYLOAD = 7 * TS_PACKET  # 1316 bytes, SRT's live-mode payload: at most this much per message
# PyAV's I/O buffer for a muxer writing to an SRT connection (``av.open(..., buffer_size=IO_BUFFER_SIZE)``):
# whole payloads, so a full buffer is written as whole TS packets; near PyAV's 32 KiB default.
IO_BUFFER_SIZE = 24 * PAYLOAD

# From srt.h (SRT_SOCKOPT, SRT_ERRNO): option numbers and error codes, the same from 1.4.2 to 1.5.
_LINGER, _RCVTIMEO, _SNDTIMEO, _LATENCY, _PASSPHRASE, _CONNTIMEO, _STREAMID = 7, 14, 13, 23, 26, 36, 46
_TIMEOUT_ERRORS = (6002, 6003)  # SRT_EASYNCRCV, SRT_ETIMEOUT
# Rejections another attempt cannot mend: SRT_REJ_BADSECRET, SRT_REJ_UNSECURE (a wrong or missing passphrase),
# and the listener's SRT_REJX_BAD_REQUEST, SRT_REJX_UNAUTHORIZED, SRT_REJX_FORBIDDEN (a stream id refused).
_FINAL_REJECTIONS = (10, 11, 1400, 1401, 1403)
_TICK_S = 0.25  # a read waits in steps this long, so that Ctrl-C is seen during a long wait for data
# Every function called, resolved when the library is loaded: one missing is the install hint, not a traceback.
_SIGNATURES: dict[str, tuple[list[Any] | None, Any]] = {
    "srt_getversion": ([], ctypes.c_uint32),
    "srt_startup": ([], ctypes.c_int),
    "srt_setloglevel": ([ctypes.c_int], None),
    "srt_create_socket": ([], ctypes.c_int),
    "srt_setsockflag": ([ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_int], ctypes.c_int),
    "srt_connect": ([ctypes.c_int, ctypes.c_void_p, ctypes.c_int], ctypes.c_int),
    "srt_recvmsg": ([ctypes.c_int, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
    "srt_send": ([ctypes.c_int, ctypes.c_char_p, ctypes.c_int], ctypes.c_int),
    "srt_close": ([ctypes.c_int], ctypes.c_int),
    "srt_getlasterror": ([ctypes.c_void_p], ctypes.c_int),
    "srt_getlasterror_str": ([], ctypes.c_char_p),
    "srt_getrejectreason": ([ctypes.c_int], ctypes.c_int),
}
_library: ctypes.CDLL | None = None
_lock = threading.Lock()


class SrtUnreachableError(SpgimError):
    """No SRT listener answered, or it refused the caller: another attempt may find it up."""


def version_text(number: int) -> str:
    """``srt_getversion()``'s number (0xMMmmpp) as ``major.minor.patch``."""
    return f"{number >> 16}.{(number >> 8) & 0xFF}.{number & 0xFF}"


def usable_version(number: int) -> bool:
    """True for a libsrt version spgim can drive: at least :data:`MIN_VERSION`, major 1."""
    found = (number >> 16, (number >> 8) & 0xFF, number & 0xFF)
    return found >= MIN_VERSION and found[0] == MIN_VERSION[0]


def load_library(names: tuple[str, ...] = _NAMES) -> ctypes.CDLL:
    """The first of ``names`` that loads, has every function spgim calls and a usable version; started.

    Raises:
        SpgimError: none does (the install hint, with what was found).
    """
    found = []
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            for symbol, (arguments, result) in _SIGNATURES.items():
                function = getattr(lib, symbol)
                function.argtypes, function.restype = arguments, result
        except AttributeError:
            found.append(f"{name} lacks {symbol}")
            continue
        number = lib.srt_getversion()
        if not usable_version(number):
            found.append(f"{name} is {version_text(number)}")
            continue
        lib.srt_setloglevel(3)  # errors only: libsrt's warnings would go to the user's terminal
        if lib.srt_startup() < 0:
            raise SpgimError(f"libsrt could not start: {lib.srt_getlasterror_str().decode(errors='replace')}")
        return lib
    raise SpgimError(f"{INSTALL_HINT}; found {', '.join(found)}" if found else INSTALL_HINT)


def _lib() -> ctypes.CDLL:
    global _library
    with _lock:
        if _library is None:
            _library = load_library()
        return _library


@dataclass(frozen=True)
class SrtAddress:
    """Where an ``srt://`` URL points and the options it sets."""

    host: str
    port: int
    # Kept out of repr: a passphrase is a secret, and a stream id may carry one ("publish:path:user:pass").
    streamid: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    latency_ms: int | None = None


def parse_srt_url(url: str) -> SrtAddress:
    """The parts of ``srt://host:port?...``; one line for a URL spgim cannot use."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise SpgimError(f"{redact(url)}: an SRT URL needs a host and a port (srt://host:port)")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    mode = options.pop("mode", "caller")
    if mode != "caller":
        raise SpgimError(f"{redact(url)}: spgim connects as an SRT caller; mode={mode} is not supported")
    latency = options.get("latency")
    try:
        latency_ms = None if latency is None else max(0, int(latency) // 1000)  # FFmpeg's unit: microseconds
    except ValueError:
        raise SpgimError(f"{redact(url)}: latency must be microseconds, got {latency!r}") from None
    passphrase = options.get("passphrase")
    if passphrase and not 10 <= len(passphrase) <= 79:  # what libsrt accepts ("" turns encryption off)
        raise SpgimError(f"{redact(url)}: an SRT passphrase has 10 to 79 characters, this one {len(passphrase)}")
    return SrtAddress(parts.hostname, port, options.get("streamid"), passphrase, latency_ms)


class SrtConnection:
    """A connected SRT caller socket: ``read`` for PyAV's demuxer, ``write`` for its muxer.

    The socket is closed exactly once: by the constructor when it fails after creating it, else by
    :meth:`close`. After ``read`` or ``write`` has raised once, the connection is spent: FFmpeg may call
    again (probing does), and a second exception raised through PyAV would be printed to the terminal as
    "PyAV library exception being dropped", so reads return end of file and writes are dropped; the first
    exception is what PyAV raises.
    """

    def __init__(self, url: str, *, open_timeout: float = 5.0, io_timeout: float = 5.0, sending: bool = False) -> None:
        self.lib = _lib()
        self.name = redact(url)
        address = parse_srt_url(url)
        self.io_timeout = io_timeout
        self._received = b""  # the rest of a message that PyAV asked for less of
        self._unsent = b""  # the start of a TS packet, held back until the next write completes it
        self._failed = False
        # A receiver holds packets for its latency (120 ms by default) and drops them when the sender goes:
        # a sender waits that long before closing, so a stream's last frames are played.
        self.drain_s = ((address.latency_ms if address.latency_ms is not None else 120) + 50) / 1000 if sending else 0.0
        self.socket = -1
        created = self.lib.srt_create_socket()
        if created < 0:
            raise SpgimError(f"{self.name}: {self._error()}")
        self.socket = created
        try:
            self._set_int(_CONNTIMEO, round(open_timeout * 1000))
            self._set_int(_RCVTIMEO, round(min(io_timeout, _TICK_S) * 1000))
            self._set_int(_SNDTIMEO, round(io_timeout * 1000))
            if address.latency_ms is not None:
                self._set_int(_LATENCY, address.latency_ms)
            if sending:
                # Live mode closes at once, dropping what is still in flight (the last frames of a stream).
                linger = (ctypes.c_int * 2)(1, max(1, round(io_timeout)))
                if self.lib.srt_setsockflag(self.socket, _LINGER, linger, ctypes.sizeof(linger)) < 0:
                    raise SpgimError(f"{self.name}: {self._error()}")
            for option, text in ((_STREAMID, address.streamid), (_PASSPHRASE, address.passphrase)):
                if text is not None:
                    value = text.encode()
                    if self.lib.srt_setsockflag(self.socket, option, value, len(value)) < 0:
                        raise SpgimError(f"{self.name}: {self._error()}")
            self._connect(address)
        except BaseException:
            self._release()
            raise

    def _set_int(self, option: int, value: int) -> None:
        number = ctypes.c_int(value)
        if self.lib.srt_setsockflag(self.socket, option, ctypes.byref(number), ctypes.sizeof(number)) < 0:
            raise SpgimError(f"{self.name}: {self._error()}")

    def _connect(self, address: SrtAddress) -> None:
        try:
            found = socket.getaddrinfo(address.host, address.port, socket.AF_INET, socket.SOCK_DGRAM)
        except socket.gaierror as error:
            # A name server that does not answer may answer later; a name that does not exist will not.
            kind = SrtUnreachableError if error.errno == socket.EAI_AGAIN else SpgimError
            raise kind(f"cannot connect to {self.name}: {error.strerror}") from None
        host, port = str(found[0][4][0]), int(found[0][4][1])
        # struct sockaddr_in: family (host order), port and address (network order), 8 bytes of zero.
        raw = socket.AF_INET.to_bytes(2, "little") + port.to_bytes(2, "big") + socket.inet_aton(host) + bytes(8)
        buffer = ctypes.create_string_buffer(raw, len(raw))
        if self.lib.srt_connect(self.socket, buffer, len(raw)) < 0:
            final = self.lib.srt_getrejectreason(self.socket) in _FINAL_REJECTIONS
            kind = SpgimError if final else SrtUnreachableError
            raise kind(f"cannot connect to {self.name}: {self._error()}")

    def _error(self) -> str:
        return str(self.lib.srt_getlasterror_str().decode(errors="replace")).strip().rstrip(".")

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the stream; ``b""`` (end of file) once a read has raised.

        Raises:
            TimeoutError: nothing arrived for the I/O timeout (FFmpeg's MPEG-TS demuxer does not stop at
                an end of file from a file object, so silence and a lost peer are raised through PyAV).
            ConnectionError: the peer is gone.
        """
        if self._failed:
            return b""
        if not self._received:
            try:
                self._received = self._receive()
            except BaseException:  # Ctrl-C in a wait too: raised once through PyAV, never twice
                self._failed = True
                raise
        data, self._received = self._received[:size], self._received[size:]
        return data

    def _receive(self) -> bytes:
        """One message, waited for in steps of the socket's receive timeout up to ``io_timeout``."""
        deadline = time.monotonic() + self.io_timeout
        buffer = ctypes.create_string_buffer(1500)
        while True:
            received = self.lib.srt_recvmsg(self.socket, buffer, 1500)
            if received > 0:
                return buffer.raw[:received]
            if self.lib.srt_getlasterror(None) not in _TIMEOUT_ERRORS:
                raise ConnectionError(self._error() or "the peer closed the connection")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no data for {self.io_timeout:.1f} s")

    def write(self, data: bytes) -> int:
        """Send ``data`` as live-mode messages of whole 188-byte TS packets, at most :data:`PAYLOAD` bytes each.

        A TS packet split by the caller's buffer is held back until the next write (or :meth:`close`)
        completes it, so none straddles two messages: a receiver that loses one message loses whole
        packets, and relays that pass messages on as datagrams (srt-live-transmit, media servers) keep
        them aligned. Raises OSError when the peer is gone.
        """
        if self._failed:
            return len(data)
        pending = self._unsent + bytes(data)
        whole = len(pending) - len(pending) % TS_PACKET
        view = memoryview(pending)
        try:
            for start in range(0, whole, PAYLOAD):
                self._send(view[start : min(start + PAYLOAD, whole)])
        except BaseException:
            self._failed = True
            raise
        self._unsent = pending[whole:]
        return len(data)

    def _send(self, chunk: memoryview | bytes) -> None:
        message = bytes(chunk)
        if self.lib.srt_send(self.socket, message, len(message)) < 0:
            raise OSError(f"{self.name}: {self._error()}")

    def close(self) -> None:
        """Send what is held back, wait out the receiver's latency (sending), close the socket; safe twice."""
        if self.socket < 0:
            return
        try:
            if not self._failed:
                if self._unsent:
                    with contextlib.suppress(OSError):  # the peer is gone: nothing more can reach it
                        self._send(self._unsent)
                time.sleep(self.drain_s)
        finally:
            self._unsent = b""
            self._release()

    def _release(self) -> None:
        """Close the socket once."""
        created, self.socket = self.socket, -1
        if created >= 0:
            self.lib.srt_close(created)
