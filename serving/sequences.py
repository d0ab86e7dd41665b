"""The state of each live sequence of the stateful model, by correlation id (:class:`StreamTable`).

Triton's sequence batcher routes every request of a sequence to one model instance, in order, and tells
the model which sequence a request belongs to (its correlation id) and whether it starts or ends it. What the
model keeps per sequence (for ``spgim_live``: a keyframe scheduler, SPD's cached features and the previous
alpha) lives here: made on START (afresh when a correlation id is reused), dropped on END, and dropped
when the sequence was idle past the timeout. The server drops an idle sequence without telling the model,
so the table keeps its own clock and the model calls :meth:`StreamTable.expire` on every execute.

Pure Python, no Triton: the model file uses it, and the tests drive it with their own clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from spgim.errors import SpgimError

State = TypeVar("State")


@dataclass
class _Entry(Generic[State]):
    state: State
    last_seen: float


class StreamTable(Generic[State]):
    """One state per live sequence.

    Args:
        open_stream: makes the state of a new sequence.
        idle_seconds: a sequence with no frame for longer than this is dropped by :meth:`expire`.
        clock: seconds, monotonic (default :func:`time.monotonic`).
    """

    def __init__(
        self, open_stream: Callable[[], State], idle_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if idle_seconds <= 0:
            raise SpgimError(f"the sequence idle timeout must be positive, got {idle_seconds:g} s")
        self.open_stream = open_stream
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._entries: dict[int | str, _Entry[State]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, corrid: object) -> bool:
        return corrid in self._entries

    def start(self, corrid: int | str) -> State:
        """A fresh state for ``corrid`` (START): a reused correlation id forgets its old sequence."""
        state = self.open_stream()
        self._entries[corrid] = _Entry(state, self.clock())
        return state

    def get(self, corrid: int | str) -> State:
        """The state of the live sequence ``corrid``; one line saying why when there is none."""
        entry = self._entries.get(corrid)
        if entry is None:
            raise SpgimError(
                f"sequence {corrid} was never started (or ended, or was idle more than {self.idle_seconds:g} s): "
                "send its first frame with START (sequence_start=True)"
            )
        entry.last_seen = self.clock()
        return entry.state

    def end(self, corrid: int | str) -> None:
        """Drop ``corrid``'s state (END); nothing when it has none."""
        self._entries.pop(corrid, None)

    def expire(self) -> list[int | str]:
        """Drop the sequences idle longer than the timeout; returns their correlation ids."""
        now = self.clock()
        idle = [corrid for corrid, entry in self._entries.items() if now - entry.last_seen > self.idle_seconds]
        for corrid in idle:
            del self._entries[corrid]
        return idle
