"""A fixed corpus of damaged clips through ``spgim matte``: each run ends with exit 0 and a decodable output,
or a non-zero exit and one error line; never a traceback, never a hang.

The clips are generated (five containers, with audio), then damaged by :mod:`fuzz.mutations` with fixed
seeds; ``make fuzz`` searches further with atheris (``tests/fuzz/fuzz_inputs.py``).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import pytest
from fuzz.mutations import KINDS, mutate
from media import make_clip
from streaming_util import export_tiny

SPGIM = str(Path(sys.executable).with_name("spgim"))
SEEDS = {".mp4": "aac", ".mkv": "opus", ".webm": "vorbis", ".mov": "pcm_s16le", ".avi": "mp3"}
RUN_TIMEOUT = 120  # seconds; a damaged 24-frame clip that takes longer is hanging


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


def test_damaged_clips_end_cleanly(corpus: list[Path], tmp_path: Path) -> None:
    model = export_tiny(tmp_path / "model")
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
