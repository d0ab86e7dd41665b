"""``spgim batch`` on real Ray: a two-node cluster on loopback losing a node mid-job, resuming, the embedded
default against ``spgim matte``, a live stream whose node dies, and workers sharing one fresh export folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from media import make_clip
from ray_cluster import RayCluster, ray_command
from servers import published, require_servers
from streaming_util import probe

from spgim.cluster.inputs import collect_inputs
from spgim.cluster.ledger import LEDGER_FILE

pytestmark = pytest.mark.slow
CLIP_FRAMES = (150, 140, 130, 120, 110, 100)
SPGIM = [sys.executable, "-m", "spgim"]


def _sigint_as_at_a_terminal() -> None:
    """A driver the test stops with SIGINT must not inherit SIG_IGN (a background shell ignores SIGINT)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _ledger(folder: Path) -> list[dict[str, Any]]:
    path = folder / LEDGER_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob(".*") if "partial-" in p.name)


@pytest.fixture(scope="module")
def batch_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    """Six 320x192 clips with AAC audio (two share a file name in different folders) and a damaged file."""
    folder = tmp_path_factory.mktemp("batch-inputs")
    clips = []
    for index, frames in enumerate(CLIP_FRAMES):
        path = (
            folder
            / ("a" if index == 0 else "b" if index == 1 else ".")
            / ("take.mp4" if index < 2 else f"c{index}.mp4")
        )
        path.parent.mkdir(exist_ok=True)
        clips.append(make_clip(path, size=(320, 192), frames=frames, fps=25, audio="aac", seed=index).path)
    damaged = folder / "damaged.mp4"
    damaged.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(20000))  # an mp4 header, then noise
    return folder, clips, damaged


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A head and one more node, one CPU each, token-authenticated, on 127.0.0.1."""
    ray_command()
    with RayCluster(tmp_path_factory.mktemp("ray-cluster"), head_cpus=1) as running:
        running.add_node(cpus=1)
        running.wait_for_nodes(2)
        yield running


def _batch(
    arguments: list[str], env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SPGIM, "batch", *arguments], capture_output=True, text=True, env=env, timeout=timeout)


def test_output_names_never_collide(batch_inputs: tuple[Path, list[Path], Path], tmp_path: Path) -> None:
    folder, clips, _ = batch_inputs
    listed = tmp_path / "inputs.txt"
    listed.write_text(f"# two clips named take.mp4\n{clips[0]}\n\n{clips[1]}\nrtsp://user:secret@cam.local/live\n")
    items = collect_inputs([str(listed), str(folder / "*.mp4")])
    names = [item.name for item in items]
    assert names[:2] == ["a_take", "b_take"] and len(set(names)) == len(names)
    assert items[2].live and "secret" not in items[2].shown and "secret" not in items[2].name
    assert {item.name for item in items[3:]} == {"c2", "c3", "c4", "c5", "damaged"}


def test_a_lost_node_is_retried_elsewhere_and_a_bad_input_fails_once(
    cluster: RayCluster, model: Path, batch_inputs: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    _folder, clips, damaged = batch_inputs
    out = tmp_path / "out"
    worker = cluster.nodes[1]
    arguments = [
        *map(str, clips), str(damaged), "--model", str(model), "--out", str(out), "--ray", cluster.address,
        "--cpus-per-job", "1", "--backend", "onnxruntime", "--alpha", "mkv", "--work-size", "192",
    ]  # fmt: skip
    driver = subprocess.Popen([*SPGIM, "batch", *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=cluster.env())  # fmt: skip
    killed_at = None
    victim = None
    try:
        deadline = time.monotonic() + 240
        while killed_at is None and driver.poll() is None and time.monotonic() < deadline:
            records = _ledger(out)
            ended = {(r["key"], r.get("attempt")) for r in records if r.get("status") in ("done", "failed")}
            running = [
                r for r in records
                if r.get("status") == "started" and (r["key"], r["attempt"]) not in ended and r["pid"] in worker.pids()
                and r["key"] != str(damaged)
            ]  # fmt: skip
            if running:
                time.sleep(0.5)  # well inside the job: its outputs are open
                victim = running[0]["key"]
                worker.kill()
                killed_at = time.monotonic()
            time.sleep(0.1)
        _stdout, stderr = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert killed_at is not None, f"no job ran on the second node: {stderr[-2000:]}"
    assert driver.returncode == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    records = _ledger(out)
    final = {r["key"]: r for r in records if r.get("status") in ("done", "failed")}
    for clip, frames in zip(clips, CLIP_FRAMES, strict=True):
        record = final[str(clip)]
        assert record["status"] == "done", record
        assert record["frames_out"] == frames
        for kind in ("composite", "alpha"):
            seen = probe(out / record["outputs"][kind]["path"])
            assert len(seen.times) == frames
        assert probe(out / record["outputs"]["composite"]["path"]).audio_codecs == ["aac"]
    bad = final[str(damaged)]
    assert bad["status"] == "failed" and "\n" not in bad["reason"] and str(damaged) in bad["reason"]
    assert sum(1 for r in records if r["key"] == str(damaged) and r["status"] == "started") == 1  # not retried
    retried = [r for r in records if r.get("status") == "retried"]
    assert [r["key"] for r in retried] == [victim], retried
    assert final[victim]["attempt"] == 2 and final[victim]["pid"] not in worker.pids()
    assert _partials(out) == []
    assert f"failed: {damaged}" in stderr and "retried     1" in stderr

    # The same batch again: nothing runs; the damaged input is still failed (exit 1).
    again = _batch(arguments, env=cluster.env())
    assert again.returncode == 1, again.stderr[-2000:]
    assert "6 of 7 inputs already done, 1 failed and unchanged since" in again.stderr
    runs = {r["run"] for r in _ledger(out) if r.get("status") == "started"}
    assert len(runs) == 1  # no job started in the second run
    # Without the damaged file: exit 0.
    clean = _batch([a for a in arguments if a != str(damaged)], env=cluster.env())
    assert clean.returncode == 0, clean.stderr[-2000:]


def test_the_embedded_default_equals_spgim_matte(
    model: Path, batch_inputs: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    _, clips, _ = batch_inputs
    chosen = clips[2:5]
    out = tmp_path / "batch"
    common = ["--model", str(model), "--backend", "onnxruntime", "--work-size", "192", "--threads", "2"]
    result = _batch([*map(str, chosen), "--out", str(out), "--composite", "none", "--alpha", "png", *common])
    assert result.returncode == 0, result.stderr[-3000:]
    records = [r for r in _ledger(out) if r.get("status") == "done"]
    assert len(records) == 3
    loads: dict[int, int] = {}
    for record in records:
        loads[record["pid"]] = loads.get(record["pid"], 0) + int(record["model_loaded"])
    assert all(count == 1 for count in loads.values()), loads  # once per worker, reused for its other inputs
    assert len(loads) < len(records)  # some worker ran more than one input
    for clip in chosen:
        alone = tmp_path / f"matte-{clip.stem}"
        matted = subprocess.run(
            [*SPGIM, "matte", str(clip), "--alpha", str(alone), "--quiet", *common], capture_output=True, text=True
        )
        assert matted.returncode == 0, matted.stderr[-2000:]
        ours = sorted((out / f"{clip.stem}-alpha-frames").iterdir())
        theirs = sorted(alone.iterdir())
        assert len(ours) == len(theirs) == CLIP_FRAMES[clips.index(clip)]
        for a, b in zip(ours, theirs, strict=True):
            import cv2

            assert np.array_equal(cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED))


def test_workers_opening_one_fresh_export_rank_it_once(
    model: Path, batch_inputs: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    _, clips, _ = batch_inputs
    fresh = tmp_path / "export"
    shutil.copytree(model, fresh, ignore=shutil.ignore_patterns("spgim-ranking.json*"))
    out = tmp_path / "out"
    result = _batch([str(clips[4]), str(clips[5]), "--model", str(fresh), "--out", str(out), "--backend", "auto",
                     "--cpus-per-job", "1", "--work-size", "192"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    records = [r for r in _ledger(out) if r.get("status") == "done"]
    assert len({r["pid"] for r in records}) == 2  # two workers, each opening the folder
    selections = sorted(r["selection"] for r in records)
    assert sum("measured, cached in" in s for s in selections) == 1, selections
    assert sum("reused" in s for s in selections) == 1, selections
    caches = sorted(p.name for p in fresh.iterdir() if p.name.startswith(("spgim-ranking", ".spgim-ranking")))
    assert caches == ["spgim-ranking.json", "spgim-ranking.json.lock"], caches
    data = json.loads((fresh / "spgim-ranking.json").read_text())
    assert len(data["entries"]) == 1


def test_a_live_stream_continues_on_another_node_into_a_new_segment(model: Path, clip: Path, tmp_path: Path) -> None:
    require_servers()
    ray_command()
    out = tmp_path / "out"
    with (
        published("rtmp", clip, tmp_path) as (_, url),
        RayCluster(tmp_path / "cluster", head_cpus=0) as live_cluster,  # the head runs no job: it survives
    ):
        first, second = live_cluster.add_node(cpus=1), live_cluster.add_node(cpus=1)
        live_cluster.wait_for_nodes(3)
        driver = subprocess.Popen(
            [*SPGIM, "batch", url, "--model", str(model), "--out", str(out), "--ray", live_cluster.address,
             "--cpus-per-job", "1", "--backend", "onnxruntime", "--work-size", "128"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=live_cluster.env(),
            preexec_fn=_sigint_as_at_a_terminal,
        )  # fmt: skip
        try:
            host = _wait_for(lambda: _running_on(out, (first, second)), 90, "the stream never started")
            _wait_for(lambda: _segment_growing(out, "part001"), 60, "the first segment never grew")
            host.kill()
            restarted = lambda: any(r.get("status") == "restarted" for r in _ledger(out)) or driver.poll() is not None  # noqa: E731
            _wait_for(restarted, 120, "no restart")
            assert driver.poll() is None, driver.communicate()[1][-3000:] + json.dumps(_ledger(out))[-3000:]
            _wait_for(lambda: _segment_growing(out, "part002"), 60, "the second segment never grew")
            driver.send_signal(signal.SIGINT)
            _stdout, stderr = driver.communicate(timeout=90)
        finally:
            if driver.poll() is None:
                driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    records = _ledger(out)
    segments = sorted((r for r in records if r.get("status") == "segment"), key=lambda r: r["segment"])
    assert [r["segment"] for r in segments] == [1, 2], segments
    assert segments[0].get("salvaged") is True
    for record in segments:
        seen = probe(out / record["outputs"]["composite"]["path"])
        assert len(seen.times) > 10
    assert _partials(out) == []


def _wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(what)


def _running_on(out: Path, nodes: tuple[Any, ...]) -> Any:
    for record in _ledger(out):
        if record.get("status") == "started":
            for node in nodes:
                if record["pid"] in node.pids():
                    return node
    return None


def _segment_growing(out: Path, segment: str) -> bool:
    partial = [p for p in _partials(out) if segment in p.name]
    return bool(partial) and partial[0].stat().st_size > 20000


def test_ctrl_c_finalises_the_running_jobs_outputs(
    model: Path, batch_inputs: tuple[Path, list[Path], Path], tmp_path: Path
) -> None:
    """Ctrl-C at a terminal reaches the driver and the local Ray it started (one process group): the running
    job's outputs are finalised and kept as .incomplete, nothing is left half-written, the exit status is 130."""
    _, clips, _ = batch_inputs
    long_clip = make_clip(tmp_path / "long.mp4", size=(320, 192), frames=750, fps=25, audio="aac").path
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [*SPGIM, "batch", str(long_clip), str(clips[5]), "--model", str(model), "--out", str(out),
         "--backend", "onnxruntime", "--work-size", "192", "--cpus-per-job", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_sigint_as_at_a_terminal,
    )  # fmt: skip
    try:
        _wait_for(lambda: any(p.stat().st_size > 50000 for p in _partials(out)), 120, "no job got going")
        os.killpg(driver.pid, signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    records = _ledger(out)
    assert not [r for r in records if r.get("status") == "failed"], records  # stopping is not failing
    stopped = [r for r in records if r.get("status") == "interrupted" and r.get("incomplete")]
    assert [r["key"] for r in stopped] == [str(long_clip)], records
    for record in stopped:
        kept = probe(out / record["incomplete"]["composite"]["path"])
        assert 0 < len(kept.times) < 750 and kept.audio_codecs == ["aac"]
    assert _partials(out) == []
    assert not (out / "long.mp4").exists()  # the final name never holds a partial file


def test_without_ray_the_command_names_the_extra(model: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['ray'] = None; from spgim.cli import main; "
        "sys.exit(main(['batch', sys.argv[1], '--model', sys.argv[2], '--out', sys.argv[3]]))"
    )
    clip = make_clip(tmp_path / "c.mp4").path
    done = subprocess.run([sys.executable, "-c", code, str(clip), str(model), str(tmp_path / "out")],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        "spgim batch: error: spgim batch runs on Ray, which is not installed: pip install 'spgim[cluster]'\n"
    )
