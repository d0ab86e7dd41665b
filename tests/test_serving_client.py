"""``spgim matte --server``: decode, composite and encode here, the model on a real ``spgim serve`` (loopback)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from loopback import free_port
from media import make_clip
from requirements import unavailable

from spgim.cli import main
from spgim.errors import SpgimError
from spgim.serving.options import ServerOptions
from spgim.serving.repository import write_repository
from spgim.serving.server import TritonServer, find_tritonserver
from spgim.streaming.job import matte_video
from spgim.streaming.options import EngineOptions, MattingOptions, Outputs

pytestmark = pytest.mark.slow

WORK_SIZE = 128
INTERVAL = 3
SIZE = (320, 192)


def _repository(model: Path, folder: Path) -> Path:
    try:
        find_tritonserver()
    except SpgimError as error:
        unavailable(str(error))
    return write_repository(
        model,
        folder / "models",
        EngineOptions(backend="onnxruntime"),
        MattingOptions(work_size=WORK_SIZE, keyframe_interval=INTERVAL),
        ServerOptions(instances=1),
    )


def _ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


@pytest.fixture(scope="module")
def served(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A tritonserver serving :func:`model` on loopback ports for this module."""
    folder = tmp_path_factory.mktemp("triton-client")
    with TritonServer(_repository(model, folder), **_ports(), log_path=folder / "tritonserver.log") as server:
        yield server


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 320x192 clip."""
    path = tmp_path_factory.mktemp("client-clip") / "c.mp4"
    make_clip(path, size=SIZE, frames=40)
    return path


@pytest.fixture(scope="module")
def local_alpha(model: Path, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """The clip matted here, with the server's engine, working size and keyframe interval."""
    out = tmp_path_factory.mktemp("local") / "alpha"
    argv = ["matte", str(clip), "--model", str(model), "--backend", "onnxruntime", "--quiet"]
    assert main([*argv, "--work-size", str(WORK_SIZE), "--keyframe-interval", str(INTERVAL), "--alpha", str(out)]) == 0
    return _frames(out)


def _frames(folder: Path) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in sorted(folder.iterdir())]


def _assert_same(served_frames: list[np.ndarray], local: list[np.ndarray]) -> None:
    assert len(served_frames) == len(local) == 40
    for index, (got, expected) in enumerate(zip(served_frames, local, strict=True)):
        np.testing.assert_array_equal(got, expected, err_msg=f"frame {index}")


def test_matte_through_the_server_writes_what_matte_here_writes(
    served: TritonServer, clip: Path, local_alpha: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "alpha"
    assert main(["matte", str(clip), "--server", served.grpc_url, "--alpha", str(out), "--quiet"]) == 0
    _assert_same(_frames(out), local_alpha)
    err = capsys.readouterr().err
    print(err)
    assert f"backend triton spgim_live at {served.grpc_url}" in err
    assert "server round trip p50 " in err and f"(interval {INTERVAL})" in err


def test_the_python_api_gives_what_the_command_line_gives(
    served: TritonServer, clip: Path, local_alpha: list[np.ndarray], tmp_path: Path
) -> None:
    result = matte_video(
        clip,
        Outputs(alpha=tmp_path / "api"),
        engine=EngineOptions(server=served.grpc_url, batch=4),  # a batch goes out one frame per request
        matting=MattingOptions(),
        progress=False,
    )
    _assert_same(_frames(tmp_path / "api"), local_alpha)
    assert result.backend == f"triton spgim_live at {served.grpc_url}" and result.frames_out == 40
    assert result.server_p50_s is not None and result.server_p90_s is not None
    assert 0 < result.server_p50_s <= result.server_p90_s
    assert result.keyframe_interval == INTERVAL and result.keyframes is not None and result.keyframes >= 40 // INTERVAL
    print(f"round trip p50 {result.server_p50_s * 1e3:.1f} ms p90 {result.server_p90_s * 1e3:.1f} ms")


def test_a_server_killed_mid_job_is_reconnected_and_the_job_ends_whole(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository, ports = _repository(model, tmp_path), _ports()
    clip = tmp_path / "long.mp4"
    make_clip(clip, size=SIZE, frames=200)
    server = TritonServer(repository, **ports, log_path=tmp_path / "first.log", stop_grace=0.5).start()
    address = server.grpc_url
    seen: list[str] = []
    restarted: list[TritonServer] = []

    def log(message: str) -> None:
        seen.append(message)

    def outage() -> None:
        # Some frames in, by count, not by time: a fast machine finishes 200 frames in under 3 s.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list((tmp_path / "alpha").glob("*.png"))) < 40:
            time.sleep(0.02)
        server.stop()
        time.sleep(2.0)
        restarted.append(TritonServer(repository, **ports, log_path=tmp_path / "second.log").start())

    killer = threading.Thread(target=outage)
    try:
        killer.start()
        result = matte_video(
            clip, Outputs(alpha=tmp_path / "alpha"), engine=EngineOptions(server=address), log=log, progress=False
        )
        killer.join()
    finally:
        killer.join()
        server.stop()
        for again in restarted:
            again.stop()
    print("\n".join(seen))
    print(result.summary_line())
    lost = [line for line in seen if line.startswith(f"server {address} lost: ")]
    assert len(lost) == 1 and lost[0].endswith("; reconnecting") and "\n" not in lost[0]
    assert any("back after" in line for line in seen)
    assert result.frames_out == result.frames_in == 200 and result.error is None
    assert len(list((tmp_path / "alpha").iterdir())) == 200


def test_a_server_that_does_not_come_back_ends_the_job_with_its_outputs_finalised(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import av

    import spgim.streaming.remote as remote

    monkeypatch.setattr(remote, "RECONNECT_DELAYS_S", (0.2, 0.2))
    repository = _repository(model, tmp_path)
    clip = tmp_path / "long.mp4"
    make_clip(clip, size=SIZE, frames=600)  # long enough to be mid-job 2 s in on a fast machine
    seen: list[str] = []
    with TritonServer(repository, **_ports(), log_path=tmp_path / "t.log", stop_grace=0.5) as server:
        killer = threading.Timer(2.0, server.stop)
        killer.start()
        with pytest.raises(SpgimError) as failed:
            matte_video(
                clip,
                Outputs(alpha=tmp_path / "alpha.mp4"),
                engine=EngineOptions(server=server.grpc_url),
                log=seen.append,
                progress=False,
            )
        killer.join()
    message = str(failed.value)
    print("\n".join([*seen, message]))
    assert message.startswith(f"server {server.grpc_url} did not come back after 2 attempts: ") and "\n" not in message
    written = int(seen[-1].split()[0])
    assert seen[-1] == f"{written} frames written before the error; outputs finalised" and 0 < written < 600
    with av.open(str(tmp_path / "alpha.mp4")) as container:  # finalised: it opens and every frame decodes
        assert sum(1 for _ in container.decode(video=0)) == written


def test_nothing_listening_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = tmp_path / "c.mp4"
    make_clip(clip, size=(96, 64), frames=4)
    port = free_port()
    assert main(["matte", str(clip), "--server", f"127.0.0.1:{port}", "--alpha", str(tmp_path / "a")]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"spgim matte: error: no spgim serve at 127.0.0.1:{port}: ") and err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "m", "--server", "127.0.0.1:1"], "give --model or --server, not both"),
        ([], "give --model or --server"),
        (["--server", "127.0.0.1:1", "--work-size", "128"], "--work-size: the server's choice"),
    ],
    ids=["both", "neither", "server-option"],
)
def test_model_and_server_are_one_of_two(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["matte", "clip.mp4", "--alpha", str(tmp_path / "a"), *argv]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"spgim matte: error: {message}") and err.count("\n") == 1
