"""A fixed corpus of damaged clips through ``spgim matte``: each run ends with exit 0 and a decodable output,
or a non-zero exit and one error line; never a traceback, never a hang.

The clips are generated (five containers, with audio), then damaged by :mod:`fuzz.mutations` with fixed
seeds; ``make fuzz`` searches further with atheris (``tests/fuzz/fuzz_inputs.py``).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fuzz.mutations import KINDS, mutate
from media import make_clip

from spgim.errors import SpgimError
from spgim.runtime.artifacts import load_artifacts
from spgim.runtime.matting import Matter
from spgim.streaming.frames import VideoFrame
from spgim.streaming.sources import open_source

SPGIM = str(Path(sys.executable).with_name("spgim"))
SEEDS = {".mp4": "aac", ".mkv": "opus", ".webm": "vorbis", ".mov": "pcm_s16le", ".avi": "mp3"}
RUN_TIMEOUT = 120  # seconds; a damaged 24-frame clip that takes longer is hanging


def _copy(model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model, tmp_path / "model"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("fuzz-corpus")
    damaged = []
    for number, (suffix, audio) in enumerate(SEEDS.items()):
        video = {".webm": "libvpx-vp9", ".avi": "mjpeg"}.get(suffix, "libx264")
        clip = make_clip(folder / f"seed{suffix}", size=(96, 64), frames=24, codec=video, audio=audio)
        data = clip.path.read_bytes()
        for kind_number, kind in enumerate(KINDS):
            seed = 1000 * number + kind_number
            target = folder / f"{kind}-{seed}{suffix}"
            target.write_bytes(mutate(data, kind, seed))
            damaged.append(target)
    return damaged


def _matte(model: Path, clip: Path, out: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    output = out / f"{clip.stem}.mp4"
    args = [SPGIM, "matte", str(clip), "--model", str(model), "--backend", "onnxruntime", "--output", str(output)]
    return output, subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


def test_damaged_clips_end_cleanly(corpus: list[Path], model: Path, tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda clip: (clip, *_matte(model, clip, tmp_path)), corpus))
    outcomes = {"written": 0, "refused": 0}
    faults = []
    for clip, output, run in runs:
        errors = [line for line in run.stderr.splitlines() if "error:" in line]
        if "Traceback" in run.stderr:
            faults.append(f"{clip.name}: traceback\n{run.stderr[-1500:]}")
        elif run.returncode == 0:
            with av.open(str(output)) as made:
                decoded = sum(1 for _ in made.decode(video=0))
            if errors or decoded == 0 or f"{decoded} out" not in run.stderr:
                faults.append(f"{clip.name}: exit 0, {decoded} frames decode\n{run.stderr}")
            outcomes["written"] += 1
        else:
            if len(errors) != 1 or not errors[0].startswith("spgim matte: error: "):
                faults.append(f"{clip.name}: exit {run.returncode}\n{run.stderr}")
            outcomes["refused"] += 1
    assert not faults, "\n\n".join(faults)
    assert len(corpus) == len(SEEDS) * len(KINDS) == sum(outcomes.values())
    # Both ends are exercised: damage the demuxer survives, and damage it refuses.
    assert outcomes["written"] > 0 and outcomes["refused"] > 0, outcomes


def test_tags_in_no_known_encoding_do_not_stop_the_job(tmp_path: Path) -> None:
    """What the fuzzer found first: a title whose bytes are not UTF-8 made opening the file raise."""
    clip = tmp_path / "tagged.mkv"
    with av.open(str(clip), "w") as container:
        container.metadata["title"] = "spgim-tag-to-break"
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 40, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = clip.read_bytes()
    assert data.count(b"spgim-tag-to-break") == 1
    clip.write_bytes(data.replace(b"spgim-tag-to-break", b"spgim-\xff\xfe-to-break"))
    source = open_source(str(clip))
    try:
        assert "\ufffd" in source.container.metadata.get("title", "")
        assert sum(isinstance(item, VideoFrame) for item in source.items(threading.Event())) == 6
    finally:
        source.close()


@pytest.mark.parametrize(
    ("where", "change", "message"),
    [
        ("spgim-export.json", lambda d: d["artifacts"][0].pop("branch"), "artifacts[0] lacks 'branch'"),
        ("spgim-export.json", lambda d: d["artifacts"][0].update(file="../spd.onnx"), "is not a file name"),
        ("spgim-export.json", lambda d: d.update(artifacts=[1]), "artifacts[0] is not an object"),
        ("spgm.onnx.json", lambda d: d.update(export_size="large"), "export_size is not a [width, height] pair"),
        ("spgm.onnx.json", lambda d: d["stream"].update(work_size="big"), "stream.work_size is not a number"),
        ("spgm.onnx.json", lambda d: d.update(companions=[{"file": "/etc/passwd", "bytes": 1}]), "not a file name"),
    ],
)
def test_export_json_of_the_wrong_shape_is_one_line(
    model: Path, tmp_path: Path, where: str, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    """What the fuzzer found next: manifest and sidecar fields of the wrong type or missing raised KeyError."""
    model = _copy(model, tmp_path)  # the session's export, damaged here on a copy
    data = json.loads((model / where).read_text())
    change(data)
    (model / where).write_text(json.dumps(data))
    with pytest.raises(SpgimError, match=re.escape(message)):
        load_artifacts(model)


def test_an_export_without_an_spgm_artifact_is_one_line(model: Path, tmp_path: Path) -> None:
    """The fuzzer's third finding: a manifest listing only SPD artifacts stopped Matter with StopIteration."""
    model = _copy(model, tmp_path)  # the session's export, damaged here on a copy
    manifest = json.loads((model / "spgim-export.json").read_text())
    manifest["artifacts"] = [item for item in manifest["artifacts"] if item["branch"] == "spd"]
    (model / "spgim-export.json").write_text(json.dumps(manifest))
    with pytest.raises(SpgimError, match="lists no SPD and SPGM pair"):
        Matter(model, backend="onnxruntime")
