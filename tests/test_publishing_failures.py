"""When a destination or a disk fails: an SRT listener restarted mid-stream, one gone for good, a server that
accepts and drops, one that stops reading while the job shuts down (Ctrl-C, SIGTERM twice), a file that
cannot be finished; audio shared by outputs on two threads; and timestamps that jump."""

from __future__ import annotations

import contextlib
import itertools
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_clip
from servers import SrtRelay, free_udp_base, require_servers
from streaming_util import probe

from spgim.streaming.job import matte_video
from spgim.streaming.options import Outputs

pytestmark = pytest.mark.slow  # real servers and outages

SPGIM = str(Path(sys.executable).with_name("spgim"))


def grey_matte(images: np.ndarray) -> np.ndarray:
    """A stand-in model: the red channel as alpha (what is published does not depend on the model)."""
    return images[..., 0].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 s at 25 frames/s: a published job reads it in real time, longer than any failure below takes."""
    return make_clip(tmp_path_factory.mktemp("failures-clip") / "long.mp4", size=(160, 96), frames=600, fps=25).path


@contextmanager
def tcp_server(*, drop: bool) -> Iterator[int]:
    """A TCP server on 127.0.0.1: with ``drop`` it reads each connection for half a second, then resets it;
    without, it accepts and never reads (its receive buffer small). Yields its port."""

    def accept_then_reset(connection: socket.socket) -> None:
        connection.settimeout(0.1)
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            with contextlib.suppress(TimeoutError):
                connection.recv(65536)
        # A reset, as a server that takes the stream and then refuses it (a bad key, a full relay).
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by the accepted sockets
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if drop:
                threading.Thread(target=accept_then_reset, args=(connection,), daemon=True).start()
            else:
                held.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        thread.join()
        listener.close()
        for connection in held:
            connection.close()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("spgim matte: error:")]


def test_a_restarted_srt_listener_is_reconnected_and_the_recording_is_whole(tmp_path: Path) -> None:
    require_servers()
    source = make_clip(tmp_path / "in.mp4", size=(160, 96), frames=300, fps=25).path
    relay = SrtRelay(tmp_path, sink=tmp_path / "first.ts")
    relays = [relay]

    def restart() -> None:
        time.sleep(3.0)
        relay.stop()
        time.sleep(2.0)
        relays.append(SrtRelay(tmp_path, sink=tmp_path / "second.ts", srt_port=relay.srt_port))

    messages: list[str] = []
    outage = threading.Thread(target=restart)
    outage.start()
    try:
        result = matte_video(
            source,
            Outputs(composite=[relay.publish_url(), tmp_path / "rec.mp4"]),
            matter=grey_matte,
            log=messages.append,
        )
    finally:
        outage.join()
        for started in relays:
            started.stop()
    assert any("dropped" in message for message in messages), messages
    assert any(message.endswith("again") for message in messages), messages
    summary = next(note for note in result.notes if "frames published" in note)
    assert "outages" in summary and "abandoned" not in summary, summary
    assert len(probe(tmp_path / "rec.mp4").times) == 300
    assert len(probe(tmp_path / "second.ts").times) > 25, "nothing reached the restarted listener"


def test_an_srt_destination_gone_for_good_ends_a_job_that_had_no_other_output(model: Path, long_clip: Path) -> None:
    require_servers()
    relay = SrtRelay(long_clip.parent, sink=long_clip.parent / "gone.ts")
    command = [SPGIM, "matte", str(long_clip), "--model", str(model), "--output", relay.publish_url()]
    process = subprocess.Popen(
        [*command, "--reconnects", "1", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    time.sleep(4.0)
    relay.stop()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and "gave up after 1 reconnect attempts" in errors[0], stderr
    assert "Traceback" not in stderr


def test_a_destination_that_accepts_and_drops_is_given_up(model: Path, long_clip: Path) -> None:
    with tcp_server(drop=True) as port:
        command = [SPGIM, "matte", str(long_clip), "--model", str(model), "--output", f"tcp://127.0.0.1:{port}"]
        done = subprocess.run([*command, "--reconnects", "2", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and "gave up after 2 reconnect attempts" in errors[0], done.stderr
    attempts = [line for line in done.stderr.splitlines() if "dropped" in line or "retry" in line]
    assert 2 <= len(attempts) <= 4, done.stderr  # one line per attempt, with back-off: not two a second
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "signals",
    [(signal.SIGINT,), (signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT)],
    ids=["ctrl-c", "sigterm-twice", "ctrl-c-twice"],
)
def test_a_stalled_destination_at_shutdown_still_leaves_a_finished_recording(
    model: Path, long_clip: Path, tmp_path: Path, signals: tuple[int, ...]
) -> None:
    recording, progress = tmp_path / "rec.mp4", tmp_path / "alpha"
    with tcp_server(drop=False) as port:
        # The destination first, as in the README's example: files are finished first all the same. A small
        # send buffer (FFmpeg's option) makes it stall within a frame or two of connecting.
        destination = f"tcp://127.0.0.1:{port}?send_buffer_size=4096"
        command = [SPGIM, "matte", str(long_clip), "--model", str(model), "--output", destination]
        command += ["--output", str(recording), "--alpha", str(progress), "--quiet"]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell ignores it
        )
        deadline = time.monotonic() + 60
        # 100 frames is 4 s of the paced clip: long past the server's buffer filling up.
        while time.monotonic() < deadline and (not progress.is_dir() or len(list(progress.iterdir())) < 100):
            time.sleep(0.1)
        signalled = time.monotonic()
        for number in signals:
            process.send_signal(number)
            time.sleep(0.3)
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - signalled
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    published = next(line for line in stderr.splitlines() if "frames published" in line)
    assert "lost" in published, published  # the destination did stall
    frames = len(probe(recording).times)  # opens only with the MP4's index (moov), written by the trailer
    assert frames >= 100 and frames == len(list(progress.iterdir())), stderr
    # Bounded: the destination's drain time (5 s, 0.5 s once hurried), not its 5 s timeouts over and over.
    assert took < (12.0 if len(signals) == 1 else 8.0), (took, stderr)


def test_a_file_that_cannot_be_finished_leaves_the_others_finished(model: Path, tmp_path: Path) -> None:
    source = make_clip(tmp_path / "in.mp4", size=(96, 64), frames=40, fps=25).path
    full = tmp_path / "full.mp4"
    full.symlink_to("/dev/full")  # every write: No space left on device
    alpha = tmp_path / "alpha.mkv"
    command = [SPGIM, "matte", str(source), "--model", str(model), "--output", str(full), "--alpha", str(alpha)]
    done = subprocess.run([*command, "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1 and "No space left on device" in errors[0] and "full.mp4" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert len(probe(alpha).times) > 0


def decoded_audio(path: Path) -> np.ndarray:
    """Every sample of the first audio track, channels first, as float64."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().astype(np.float64) for frame in container.decode(stream)]
    return np.concatenate(chunks, axis=-1)


def audio_span(path: Path) -> float:
    """Seconds the first audio track decodes to."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.codec_context.sample_rate


@pytest.mark.parametrize("codec", ["ac3", "pcm_s16le"])
def test_outputs_on_two_threads_each_decode_the_audio_themselves(codec: str, tmp_path: Path) -> None:
    require_servers()
    source = make_clip(tmp_path / f"in-{codec}.mkv", size=(96, 64), frames=75, fps=25, audio=codec)
    length = source.audio_seconds

    def run(folder: Path, composite: Path, foreground: Path | None = None) -> None:
        folder.mkdir()
        relay = SrtRelay(folder, sink=folder / "published.ts")
        try:
            outputs = Outputs(composite=[composite, relay.publish_url()], foreground=foreground)
            matte_video(source.path, outputs, matter=grey_matte)
            relay.settle()
        finally:
            relay.stop()

    # Two outputs that re-encode (WebM takes neither AC-3 nor PCM) and a publisher (MPEG-TS: AC-3 as it is, PCM
    # to AAC) on its own thread; then each alone.
    together = tmp_path / "together"
    run(together, together / "composite.webm", foreground=together / "foreground.webm")
    alone = tmp_path / "alone"
    run(alone, alone / "composite.webm")
    for name in ("composite.webm", "foreground.webm", "published.ts"):
        made = together / name
        assert abs(audio_span(made) - length) <= 0.05, (name, audio_span(made), length)
        reference = decoded_audio(alone / ("composite.webm" if name == "foreground.webm" else name))
        samples = decoded_audio(made)
        assert samples.shape == reference.shape and np.array_equal(samples, reference), name


def test_a_timestamp_jump_back_continues_the_clock(tmp_path: Path) -> None:
    # Two recordings spliced byte for byte (as a segmented camera or `cat` makes them): the clock restarts.
    parts = [make_clip(tmp_path / f"part{i}.ts", size=(96, 64), frames=25, fps=25, seed=i).path for i in (0, 1)]
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    matte_video(spliced, Outputs(alpha=tmp_path / "alpha.mkv"), matter=grey_matte, progress=False)
    times = probe(tmp_path / "alpha.mkv").times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 50 and min(gaps) >= 0.03 and max(gaps) <= 0.05, gaps


def test_paced_publishing_does_not_wait_through_a_gap_in_the_timestamps(tmp_path: Path) -> None:
    times = [index / 25 + (60.0 if index >= 25 else 0.0) for index in range(50)]  # 1 s, a 60 s hole, 1 s more
    clip = make_clip(tmp_path / "gap.mkv", frames=50, fps=25, times=times).path
    port = free_udp_base(2)  # UDP: sent whether anyone listens or not
    result = matte_video(
        clip, Outputs(composite=[f"udp://127.0.0.1:{port}", tmp_path / "rec.mp4"]), matter=grey_matte, progress=False
    )
    assert result.frames_out == 50
    assert result.wall_s < 30.0, result.wall_s  # not the hole's 60 s
    times = probe(tmp_path / "rec.mp4").times
    assert times[25] - times[24] > 59.0  # the file keeps the input's timing
