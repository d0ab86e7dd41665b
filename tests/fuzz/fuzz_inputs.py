"""atheris harness over what spgim reads from users: media files (open, demux, decode through
:mod:`spgim.streaming.sources`), checkpoints (:func:`spgim.train.checkpoint.load_checkpoint`) and export
folders (the manifest and a sidecar, as :class:`spgim.runtime.matting.Matter` reads them).

The first byte of an input picks the target and the container; the rest is the file. Anything but
:class:`SpgimError` escaping is a finding (atheris stops and writes the input as ``crash-*``).

    python tests/fuzz/make_seeds.py CORPUS        # generated clips, a checkpoint, an export's JSON
    python tests/fuzz/fuzz_inputs.py CORPUS -max_total_time=300 -rss_limit_mb=4096

``make fuzz`` does both (``FUZZ_SECONDS``, default 300).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["spgim"]):
    from spgim.errors import SpgimError
    from spgim.runtime.matting import Matter
    from spgim.streaming.sources import open_source
    from spgim.train.checkpoint import load_checkpoint

SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
TARGETS = ("media", "checkpoint", "manifest", "sidecar")
MAX_ITEMS = 200  # frames and packets read from one input: enough to reach its audio and its damage
SCRATCH = Path(tempfile.mkdtemp(prefix="spgim-fuzz-"))
EXPORT = Path(__file__).resolve().parents[2] / ".fuzz" / "export"  # a tiny ONNX export, by make_seeds.py


def selector(target: str, suffix: str = ".mp4") -> bytes:
    """The first byte of an input for ``target`` (and, for media, its container)."""
    return bytes([TARGETS.index(target) * len(SUFFIXES) + SUFFIXES.index(suffix)])


def run_media(data: bytes, suffix: str) -> None:
    path = SCRATCH / f"input{suffix}"
    path.write_bytes(data)
    source = open_source(str(path))
    try:
        for count, _ in enumerate(source.items(threading.Event())):
            if count >= MAX_ITEMS:
                break
    finally:
        source.close()


def run_checkpoint(data: bytes) -> None:
    path = SCRATCH / "input.pt"
    path.write_bytes(data)
    load_checkpoint(path)


def run_export(data: bytes, replaced: str) -> None:
    folder = SCRATCH / "export"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(EXPORT, folder)
    (folder / replaced).write_bytes(data)
    Matter(folder, backend="onnxruntime", threads=1)


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    target, suffix = TARGETS[(data[0] // len(SUFFIXES)) % len(TARGETS)], SUFFIXES[data[0] % len(SUFFIXES)]
    body = data[1:]
    try:
        if target == "media":
            run_media(body, suffix)
        elif target == "checkpoint":
            run_checkpoint(body)
        else:
            run_export(body, "spgim-export.json" if target == "manifest" else "spgm.onnx.json")
    except SpgimError:
        pass


def main() -> None:
    if not (EXPORT / "spgim-export.json").is_file():
        sys.exit(f"{EXPORT} is missing: run tests/fuzz/make_seeds.py CORPUS first")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
