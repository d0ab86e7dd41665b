"""The model on an ``spgim serve`` (Triton, gRPC) instead of in this process: :class:`TritonMatter`.

``spgim matte SOURCE --server HOST:PORT`` decodes, composites and encodes here and sends each frame to the
server's keyframed stream model ``spgim_live`` (see docs/serving.md): one Triton sequence per job, its
correlation id a random 63-bit number, START on the first frame, END when the job closes the matter. The
live model takes one frame per request, so a batch of frames goes out one request per frame, in order.

A server that goes away (connection refused or reset, the server stopping, or the sequence forgotten after
a restart or an idle timeout) is handled like a live source that drops: one line to the log, reconnects
with back-off (:data:`RECONNECT_DELAYS_S`) and, once the server answers again, a new sequence (START: the
server lost the keyframe state); the frame that failed is sent again. A server that does not come back is
one :class:`~spgim.errors.SpgimError` line, and the job finalises its outputs as on any matting error.

The names of the served models and tensors are constants here: streaming may not import
:mod:`spgim.serving` (it sits above streaming), which writes the same names into its configs.
``tritonclient`` is imported when a matter is made, so that importing this module loads nothing.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spgim.errors import SpgimError

LIVE_MODEL = "spgim_live"  # the keyframed stream model (spgim.serving.repository.LIVE_MODEL_NAME)
STATELESS_MODEL = "spgim"  # SPD on every frame (spgim.serving.repository.MODEL_NAME)
FRAMES, ALPHA, KEYFRAME = "frames", "alpha", "keyframe"
INSTALL_HINT = "pip install 'spgim[serve]'"
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)  # waits before each reconnect attempt (30.5 s in all)
CONNECT_TIMEOUT_S = 10.0  # a health or config call
FRAME_TIMEOUT_S = 120.0  # one frame's round trip (a loaded CPU server takes well under a second)
# gRPC codes of a server that is gone or going (anything else is a refusal of the frame: one line, no retry).
LOST_STATUSES = ("UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED", "ABORTED")
# The server no longer knows the sequence (restarted, or idle past its timeout): start a new one.
FORGOTTEN = ("START flag", "was never started", "Server is stopping", "is not ready", "unknown model")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _message(error: BaseException) -> str:
    """The text of a tritonclient error (its ``message()``), or of any other."""
    message = getattr(error, "message", None)
    return str(message() if callable(message) else error)


def _tritonclient() -> tuple[Any, type[Exception]]:
    """``tritonclient.grpc`` and its exception type, or one line on how to install them."""
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise SpgimError(f"--server needs Triton's client; install it with: {INSTALL_HINT}") from None
    return grpcclient, InferenceServerException


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class TritonMatter:
    """Frames to alpha through ``spgim_live`` on the ``spgim serve`` at ``address`` (``HOST:PORT``, gRPC).

    Called like a local :class:`~spgim.runtime.matting.Matter`: uint8 ``(N, H, W, 3)`` RGB frames in,
    float32 ``(N, H, W)`` alpha out; one instance is one stream (one sequence at a time). Call :meth:`close`
    when the job ends: it ends the sequence on the server.

    Args:
        address: the server's gRPC endpoint, ``HOST:PORT``.
        log: where the drop and reconnect lines go.
        reconnect_delays: seconds waited before each reconnect attempt after the server went away (None:
            :data:`RECONNECT_DELAYS_S`).
        frame_timeout: seconds one frame's request may take.
    """

    def __init__(
        self,
        address: str,
        *,
        log: Callable[[str], None] | None = None,
        reconnect_delays: Sequence[float] | None = None,
        frame_timeout: float = FRAME_TIMEOUT_S,
    ) -> None:
        if not address or ":" not in address or address.startswith(("http://", "https://", "grpc://")):
            raise SpgimError(f"--server must be HOST:PORT (the gRPC port of spgim serve), got {address!r}")
        self.grpc, self.failure = _tritonclient()
        self.address = address
        self.log = log or (lambda message: None)
        self.reconnect_delays = tuple(RECONNECT_DELAYS_S if reconnect_delays is None else reconnect_delays)
        self.frame_timeout = frame_timeout
        self.backend_name = f"triton {LIVE_MODEL} at {address}"
        self.device = "cpu"  # the alpha comes back to this process's memory
        self.round_trips: list[float] = []  # seconds per frame, request sent to alpha received
        self.keyframes = 0  # frames the server ran SPD on
        self.sequences = 0  # sequences started (1 + the reconnects that restarted the stream)
        self.reconnects = 0
        self.keyframe_interval: int | None = None  # the server's, when its config states it
        self.sequence_id = 0
        self._started = False  # the current sequence has had its START frame
        self._last: np.ndarray | None = None  # the last frame sent: END goes with it again
        self._client: Any = None
        try:
            self._connect()
        except self.failure as error:
            raise SpgimError(f"no spgim serve at {address}: {_one_line(_message(error))}") from None

    def _connect(self) -> None:
        """A new client, checked: the server is live and ``spgim_live`` ready; a fresh sequence id."""
        self._drop_client()
        client = self.grpc.InferenceServerClient(self.address)
        try:
            if not client.is_server_live(client_timeout=CONNECT_TIMEOUT_S):
                raise SpgimError(f"the server at {self.address} is not live")
            if not client.is_model_ready(LIVE_MODEL, client_timeout=CONNECT_TIMEOUT_S):
                raise SpgimError(
                    f"the server at {self.address} has no ready model {LIVE_MODEL}; start it with spgim serve"
                )
            config = client.get_model_config(LIVE_MODEL, as_json=True, client_timeout=CONNECT_TIMEOUT_S)
        except BaseException:
            client.close()
            raise
        parameters = config.get("config", {}).get("parameters", {})
        interval = parameters.get("keyframe_interval", {}).get("string_value")
        self.keyframe_interval = int(interval) if interval else None
        self._client = client
        self.sequence_id = random.getrandbits(63) or 1  # 0 is "no sequence" to Triton
        self._started = False

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a client of a server that is gone may fail to close
                client.close()

    def _lost(self, error: Exception) -> bool:
        """Whether ``error`` means the server went away or forgot the sequence (else: a refusal of the frame)."""
        status = str(getattr(error, "status", lambda: "")() or "")
        message = str(getattr(error, "message", lambda: str(error))() or "")
        return any(code in status for code in LOST_STATUSES) or any(text in message for text in FORGOTTEN)

    def _send(self, frame: np.ndarray, *, end: bool = False) -> tuple[np.ndarray, bool]:
        """One frame of the current sequence: its alpha ``(H, W)`` and whether SPD ran on it."""
        given = self.grpc.InferInput(FRAMES, [1, *frame.shape], "UINT8")
        given.set_data_from_numpy(np.ascontiguousarray(frame[None], dtype=np.uint8))
        answer = self._client.infer(
            LIVE_MODEL,
            [given],
            sequence_id=self.sequence_id,
            sequence_start=not self._started,
            sequence_end=end,
            client_timeout=self.frame_timeout,
        )
        if not self._started:
            self.sequences += 1
            self._started = True
        alpha, keyframe = answer.as_numpy(ALPHA), answer.as_numpy(KEYFRAME)
        if alpha is None or alpha.shape != (1, *frame.shape[:2]):
            raise SpgimError(f"the server at {self.address} answered no alpha of the frame's size")
        return alpha[0], bool(keyframe is not None and keyframe.reshape(-1)[0])

    def _reconnect(self, reason: str) -> None:
        """Reconnect with back-off after a drop; a new sequence starts with the next frame."""
        self.log(f"server {self.address} lost: {reason}; reconnecting")
        self._drop_client()
        last = reason
        for attempt, delay in enumerate(self.reconnect_delays, start=1):
            time.sleep(delay)
            try:
                self._connect()
            except (self.failure, SpgimError) as error:
                last = _one_line(_message(error))
                continue
            self.reconnects += 1
            self.log(f"server {self.address} back after {attempt} attempt(s); a new sequence starts")
            return
        raise SpgimError(f"server {self.address} did not come back after {len(self.reconnect_delays)} attempts: {last}")

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """Float32 alpha ``(N, H, W)`` of uint8 RGB ``frames`` ``(N, H, W, 3)``, one request per frame, in order."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise SpgimError(f"frames must be (N, H, W, 3) RGB, got shape {frames.shape}")
        alphas = np.empty(frames.shape[:3], np.float32)
        for index, frame in enumerate(frames):
            while True:
                if self._client is None:
                    self._reconnect("not connected")
                sent = time.perf_counter()
                try:
                    alpha, keyframe = self._send(frame)
                except self.failure as error:
                    if not self._lost(error):
                        raise SpgimError(
                            f"server {self.address} refused a frame: {_one_line(_message(error))}"
                        ) from None
                    self._reconnect(_one_line(_message(error)))
                    continue
                self.round_trips.append(time.perf_counter() - sent)
                break
            alphas[index] = alpha
            self.keyframes += int(keyframe)
            self._last = frame
        return alphas

    def round_trip(self, q: float) -> float | None:
        """The ``q``-th percentile of the frames' round trips in seconds (None before any frame)."""
        return _percentile(self.round_trips, q)

    def close(self) -> None:
        """End the sequence on the server (its last frame again, with END) and close the connection.

        Quiet when the server is gone: it drops the sequence after its idle timeout.
        """
        if self._client is not None and self._started and self._last is not None:
            with contextlib.suppress(self.failure, SpgimError):
                self._send(self._last, end=True)
        self._started = False
        self._drop_client()
