"""Seeds for ``fuzz_inputs.py``: small generated clips in five containers with audio, damaged copies of
them, a checkpoint of the tiny SPD, and the manifest and a sidecar of a tiny ONNX export (the export
itself goes to ``.fuzz/export``, the folder the harness copies and damages).

    python tests/fuzz/make_seeds.py CORPUS
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_inputs import EXPORT, SUFFIXES, selector  # noqa: E402
from media import make_clip  # noqa: E402
from mutations import KINDS, mutate  # noqa: E402
from streaming_util import export_tiny  # noqa: E402

AUDIO = {".mp4": "aac", ".mkv": "opus", ".webm": "vorbis", ".mov": "pcm_s16le", ".avi": "mp3"}


def main(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        for number, suffix in enumerate(SUFFIXES):
            video = {".webm": "libvpx-vp9", ".avi": "mjpeg"}.get(suffix, "libx264")
            clip = make_clip(work / f"seed{suffix}", size=(64, 48), frames=12, codec=video, audio=AUDIO[suffix])
            data = clip.path.read_bytes()
            (corpus / f"clip{suffix}").write_bytes(selector("media", suffix) + data)
            for kind_number, kind in enumerate(KINDS):
                damaged = mutate(data, kind, 100 * number + kind_number)
                (corpus / f"clip-{kind}{suffix}").write_bytes(selector("media", suffix) + damaged)
        if EXPORT.exists():
            shutil.rmtree(EXPORT)
        made = export_tiny(work / "export")
        shutil.copytree(made, EXPORT)
        checkpoint = next((work / "export").rglob("spd.pt"), None)
        if checkpoint is not None:
            (corpus / "checkpoint.pt").write_bytes(selector("checkpoint") + checkpoint.read_bytes())
    (corpus / "manifest.json").write_bytes(selector("manifest") + (EXPORT / "spgim-export.json").read_bytes())
    (corpus / "sidecar.json").write_bytes(selector("sidecar") + (EXPORT / "spgm.onnx.json").read_bytes())
    print(f"{len(list(corpus.iterdir()))} seeds in {corpus}; export folder {EXPORT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".fuzz/corpus"))
