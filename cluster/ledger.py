"""The batch ledger: one JSON object per line in ``<out>/spgim-batch.jsonl``, appended by every worker.

Each line records one event of one input: ``started`` (an attempt began, on which node), ``retried`` (an
attempt began after an earlier one of the same run ended without a result: its worker or node was lost),
``done``, ``failed`` (with its one-line reason), ``interrupted``, and for live inputs ``segment`` (one
recorded part) and ``restarted``. Lines are appended whole under an exclusive lock, so workers on several
nodes writing to one shared folder never interleave; a reader skips a line it cannot parse (a writer killed
mid-line) rather than failing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spgim.errors import SpgimError

LEDGER_FILE = "spgim-batch.jsonl"
FINAL = ("done", "failed", "interrupted")  # the statuses that end an attempt


@dataclass(frozen=True)
class Ledger:
    """The ledger of the batch whose outputs go to ``folder``."""

    folder: Path

    @property
    def path(self) -> Path:
        """The ledger file."""
        return self.folder / LEDGER_FILE

    def append(self, record: dict[str, Any]) -> None:
        """Add ``record`` (a JSON object) as one line, stamped with the time and host.

        Raises:
            SpgimError: the ledger cannot be written (the batch cannot keep its promise to resume).
        """
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), **record})
        try:
            with self._locked() as descriptor:
                os.write(descriptor, (line + "\n").encode())
                os.fsync(descriptor)
        except OSError as error:
            raise SpgimError(f"cannot write the batch ledger {self.path}: {error.strerror or error}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield descriptor
        finally:
            os.close(descriptor)

    def records(self) -> list[dict[str, Any]]:
        """Every readable record, oldest first."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except OSError as error:
            raise SpgimError(f"cannot read the batch ledger {self.path}: {error.strerror or error}") from None
        found = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                found.append(record)
        return found

    def latest(self) -> dict[str, dict[str, Any]]:
        """Per input key, its last record that ended an attempt (done, failed or interrupted)."""
        last: dict[str, dict[str, Any]] = {}
        for record in self.records():
            if record.get("status") in FINAL:
                last[record["key"]] = record
        return last

    def of_run(self, run: str, key: str) -> list[dict[str, Any]]:
        """The records of one input in one run of the batch, oldest first."""
        return [r for r in self.records() if r.get("run") == run and r.get("key") == key]


def outputs_in_place(folder: Path, record: dict[str, Any]) -> bool:
    """Whether every output a ``done`` record lists is still in ``folder`` with the size it recorded."""
    outputs = record.get("outputs")
    if record.get("status") != "done" or not isinstance(outputs, dict) or not outputs:
        return False
    for entry in outputs.values():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            return False
        if _size(folder / entry["path"]) != entry.get("bytes"):
            return False
    return True


def _size(path: Path) -> int | None:
    """A file's size, or a folder's total (a PNG sequence); None where it is missing."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
        return path.stat().st_size
    except OSError:
        return None


def size_of(path: Path) -> int:
    """The size :func:`outputs_in_place` compares: a file's bytes, or the bytes of a folder's files."""
    return _size(path) or 0
