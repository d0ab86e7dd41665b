"""What a batch mattes: the inputs named on the command line, expanded, and the output name each gets.

An INPUT is a media file, a folder (its video files, recursively), a glob (``clips/**/*.mp4``), a text file
of paths and URLs (``.txt`` or ``.list``, one per line, ``#`` comments), a network URL or a webcam index.
Each input gets a stable key (what the ledger records it under) and an output name derived from its own name;
two inputs with the same file name (``a/x.mp4``, ``b/x.mp4``) are told apart by their folders, never by order.
"""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from spgim.errors import SpgimError
from spgim.streaming.urls import is_network, is_webcam, redact, scheme

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv", ".wmv")
LIST_SUFFIXES = (".txt", ".list")
RECORDED_SCHEMES = ("http", "https")  # a file served over HTTP: read once, like a local file
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # no dots: an output name has one extension, a folder none


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch.

    Attributes:
        source: what ``spgim matte`` would be given (a path or URL, secrets included: never logged).
        key: how the ledger knows the input: the absolute path, or the URL with its secrets masked plus a
            digest of the whole URL (two URLs differing only in a secret stay two inputs).
        shown: the input as messages show it (secrets masked).
        name: the output name's stem, unique within the batch.
        live: a network stream or webcam: runs until ``--duration`` or Ctrl-C, in a restartable actor.
    """

    source: str
    key: str
    shown: str
    name: str
    live: bool


def collect_inputs(specs: list[str]) -> list[BatchInput]:
    """Every input ``specs`` name, in the order given, each once (the first mention counts).

    Raises:
        SpgimError: a spec that matches nothing (a missing file, an empty folder or glob, an empty list file).
    """
    sources: list[str] = []
    for spec in specs:
        sources.extend(_expand(spec, listed_in=None))
    unique = list(dict.fromkeys(sources))
    if not unique:
        raise SpgimError("no inputs given")
    names = _output_names(unique)
    return [BatchInput(source=s, key=_key(s), shown=redact(s), name=names[s], live=_is_live(s)) for s in unique]


def _expand(spec: str, listed_in: Path | None) -> list[str]:
    where = f" (listed in {listed_in})" if listed_in else ""
    if is_network(spec) or is_webcam(spec):
        return [spec]
    path = Path(spec).expanduser()
    if listed_in is not None and not path.is_absolute():
        path = listed_in.parent / path
    if glob.has_magic(spec):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in found if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
        if not files:
            raise SpgimError(f"{spec}{where}: matches no video file")
        return [str(p.resolve()) for p in files]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise SpgimError(f"{spec}{where}: a folder with no video file ({', '.join(VIDEO_SUFFIXES)})")
        return [str(p.resolve()) for p in files]
    if not path.exists():
        raise SpgimError(f"{spec}{where}: no such file")
    if path.suffix.lower() in LIST_SUFFIXES and listed_in is None:
        return _read_list(path)
    return [str(path.resolve())]


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SpgimError(f"{path}: cannot read the list of inputs ({error})") from None
    entries = [line.strip() for line in lines]
    entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if not entries:
        raise SpgimError(f"{path}: the list of inputs is empty")
    found: list[str] = []
    for entry in entries:
        found.extend(_expand(entry, listed_in=path))
    return found


def _is_live(source: str) -> bool:
    return is_webcam(source) or (is_network(source) and scheme(source) not in RECORDED_SCHEMES)


def _key(source: str) -> str:
    if is_network(source) or is_webcam(source):
        shown = redact(source)
        if shown == source:
            return source
        return f"{shown}#{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    return source


def _parts(source: str) -> list[str]:
    """The input's name parts, most specific first: file stem then folders; URL path then host."""
    if is_webcam(source):
        return [f"webcam{source}"]
    if is_network(source):
        split = urlsplit(redact(source))
        steps = [part for part in split.path.split("/") if part and part != "***"]
        stem = Path(steps[-1]).stem if steps else ""
        return [p for p in (stem, *reversed(steps[:-1]), split.hostname or scheme(source)) if p]
    path = Path(source)
    return [path.stem, *reversed(path.parent.parts[1:])]


def _clean(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_") or "input"


def _output_names(sources: list[str]) -> dict[str, str]:
    """A unique stem per source: the file's own stem where it is unique, else prefixed with as many of its
    folders as it takes to tell the sources apart (``a_x``, ``b_x``), else a digest of the whole source."""
    parts = {source: [_clean(p) for p in _parts(source)] for source in sources}
    depth = {source: 1 for source in sources}
    names: dict[str, str] = {}
    while True:
        names = {s: "_".join(reversed(parts[s][: depth[s]])) for s in sources}
        clashes: dict[str, list[str]] = {}
        for source, name in names.items():
            clashes.setdefault(name.lower(), []).append(source)
        grown = False
        for group in clashes.values():
            if len(group) < 2:
                continue
            for source in group:
                if depth[source] < len(parts[source]):
                    depth[source] += 1
                    grown = True
        if not grown:
            break
    taken: set[str] = set()
    for source in sources:
        name = names[source]
        if name.lower() in taken:
            name = f"{name}_{hashlib.sha256(source.encode()).hexdigest()[:8]}"
        taken.add(name.lower())
        names[source] = name
    return names
