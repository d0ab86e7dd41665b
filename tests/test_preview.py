"""``spgim matte --preview [HOST:]PORT``: the live page in a real browser (Debian's chromium through its
chromedriver), what a stalled client costs the job, the binding, the errors, and the server on its own."""

from __future__ import annotations

import contextlib
import http.client
import queue
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from media import LoopbackSender, free_port, make_clip
from requirements import unavailable
from streaming_util import probe

from spgim.cli import main
from spgim.errors import SpgimError
from spgim.streaming import preview
from spgim.streaming.frames import VideoFrame
from spgim.streaming.options import PreviewAddress, PreviewOptions
from spgim.streaming.preview import PreviewServer

SPGIM = str(Path(sys.executable).with_name("spgim"))
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
BROWSER_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
# One backend, no ranking run: each job is the same work.
FAST = ("--work-size", "128", "--backend", "onnxruntime", "--quiet")
SUMMARY = re.compile(r"(\d+) frames in, (\d+) out, .*?, ([\d.]+) fps")
WAIT_S = 60.0  # how long a page or a job may take to show something on a loaded machine (a hang detector)


class MatteJob:
    """``spgim matte ARGS`` in a child process; its stderr is collected, the preview's URL read from it."""

    def __init__(self, *args: str) -> None:
        self.lines: list[str] = []
        self._urls: queue.Queue[str | None] = queue.Queue()
        self._url: str | None = None
        self.process = subprocess.Popen(
            [SPGIM, "matte", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # A shell running this suite in the background ignores SIGINT, and children inherit that.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if match := re.search(r"preview on (\S+)", line):
                self._urls.put(match.group(1))
        self._urls.put(None)

    def url(self) -> str:
        """The page's URL, as the job prints it."""
        if self._url is None:
            try:
                self._url = self._urls.get(timeout=WAIT_S)
            except queue.Empty:
                pytest.fail(f"no preview URL within {WAIT_S:.0f} s: {self.lines}")
            assert self._url is not None, "\n".join(self.lines)
        return self._url

    def finish(self, *, interrupt: bool = False) -> tuple[int, str]:
        """Wait for the job to end (after Ctrl-C with ``interrupt``): its exit code and stderr."""
        if interrupt:
            self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=WAIT_S * 2)
        self._reader.join(WAIT_S)
        return code, "\n".join(self.lines)

    def __enter__(self) -> MatteJob:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _summary(stderr: str) -> tuple[int, float]:
    """Frames written and frames per second, from the job's summary line."""
    match = SUMMARY.search(stderr)
    assert match, stderr
    return int(match.group(2)), float(match.group(3))


def _stall(url: str, path: str) -> socket.socket:
    """A client that asks for ``path`` of ``url`` and never reads: a tiny receive window fills at once."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return client


def _unread(client: socket.socket, at_least: int) -> bool:
    """Whether the server sent ``client`` at least this many bytes that it has not read; reads nothing."""
    try:
        return len(client.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)) >= at_least
    except BlockingIOError:
        return False


def _wait(condition: Callable[[], Any], what: str) -> Any:
    """``condition()`` once it is true; fails after :data:`WAIT_S`."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    pytest.fail(f"no {what} within {WAIT_S:.0f} s")


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium through chromedriver, as CI installs them (Debian's ``chromium chromium-driver``)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        unavailable(
            f"the preview page's browser tests need {', '.join(missing)}: apt-get install chromium chromium-driver"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("the preview page's browser tests need selenium: pip install -e '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in BROWSER_ARGS:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()


def _png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


@pytest.mark.slow
def test_the_page_shows_the_job_live_and_its_output_still_plays(
    model: Path, clip: Path, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    port, out = free_port(), tmp_path / "out.mp4"
    argv = ["--model", str(model), "--output", str(out), "--preview", f"127.0.0.1:{port}", *FAST]
    with LoopbackSender(clip, loop=True) as sender, MatteJob(sender.url, *argv) as job:
        assert job.url() == f"http://127.0.0.1:{port}/"
        browser.get(job.url())

        def text(name: str) -> str:
            return str(browser.find_element(By.ID, name).text)

        def loaded(element: Any) -> int:
            return int(browser.execute_script("return arguments[0].naturalWidth", element))

        _wait(lambda: text("state") == "running" and text("frames") != "-", "figures on the page")
        composite = browser.find_element(By.ID, "composite")
        _wait(lambda: loaded(composite), "composite picture")
        assert loaded(composite) == 320  # the clip's width: smaller than the cap
        for name in ("input", "alpha"):
            _wait(partial(loaded, browser.find_element(By.ID, name)), f"{name} picture")
        first, frames = _png(composite.screenshot_as_png), text("frames")
        assert first.std() > 10, "the composite is blank"
        _wait(lambda: not np.array_equal(_png(composite.screenshot_as_png), first), "new composite")
        _wait(lambda: text("frames") != frames, "new frame count")
        assert float(text("fps")) > 0 and text("backend").startswith("onnxruntime")
        assert re.fullmatch(r"\d+ ms / \d+ ms", text("latency")), text("latency")  # a live source
        assert "frames in" in text("summary")
        browser.save_screenshot(str(tmp_path / "page.png"))
        # Ctrl-C with the page still open: the job ends, its outputs finalised.
        code, stderr = job.finish(interrupt=True)
    assert code == 130, stderr
    assert "Traceback" not in stderr and "interrupted; outputs finalised" in stderr
    written, _ = _summary(stderr)
    assert written > 0 and len(probe(out).times) == written
    _wait(lambda: text("state") == "ended", "'ended' on the page once the job is gone")


# --- the job's cost -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stalled_client_does_not_slow_the_job(model: Path, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "long.mp4", size=(320, 192), frames=400, fps=25).path
    fps: dict[str, list[float]] = {"no client": [], "stalled": []}
    for round_ in range(2):  # alternated, so that load from other work falls on both alike
        for case in fps:
            out = tmp_path / f"{case}-{round_}.mp4"
            with (
                MatteJob(str(clip), "--model", str(model), "--output", str(out), "--preview", "0", *FAST) as job,
                contextlib.ExitStack() as stack,
            ):
                if case == "stalled":
                    stalled = stack.enter_context(_stall(job.url(), "/composite.mjpg"))
                    # A picture was sent to it and it reads nothing: from here on its thread waits on it.
                    _wait(partial(_unread, stalled, 1000), "picture sent to the stalled client")
                code, stderr = job.finish()
            assert code == 0, stderr
            written, rate = _summary(stderr)
            assert written == 400 and len(probe(out).times) == 400
            fps[case].append(rate)
    ratio = statistics.median(fps["stalled"]) / statistics.median(fps["no client"])
    assert ratio > 0.6, fps  # within the noise of a shared 2-core machine; a blocked job would be far below


# --- binding and errors -------------------------------------------------------------------------


def _listening(port: int) -> set[str]:
    """The addresses a TCP socket listens on at ``port``, from /proc/net/tcp and tcp6."""
    found = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / table
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, 2 * size, 8))
                found.add(socket.inet_ntop(socket.AF_INET if size == 4 else socket.AF_INET6, raw))
    return found


def _outward_address() -> str | None:
    """This machine's address towards other hosts (no packet is sent), or None without a network."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_:
        try:
            probe_.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
        except OSError:
            return None
        address = str(probe_.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.mark.slow
def test_a_bare_port_binds_loopback_only(model: Path, clip: Path, tmp_path: Path) -> None:
    port = free_port()
    argv = ["--model", str(model), "--output", str(tmp_path / "o.mp4"), "--preview", str(port), *FAST]
    with LoopbackSender(clip, loop=True) as sender, MatteJob(sender.url, *argv) as job:
        assert job.url() == f"http://127.0.0.1:{port}/"
        assert _listening(port) == {"127.0.0.1"}
        outward = _outward_address()
        if outward is not None:
            with socket.socket() as other:
                other.settimeout(5)
                assert other.connect_ex((outward, port)) != 0, f"the page answers on {outward}"
        page = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        page.request("GET", "/")
        assert page.getresponse().status == 200
        code, stderr = job.finish(interrupt=True)
    assert code == 130, stderr


def test_a_bad_address_or_a_port_in_use_is_one_line_before_any_work(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            ("nonsense", "--preview must be [HOST:]PORT (a port from 0, any free one, to 65535), got 'nonsense'"),
            ("127.0.0.1:70000", "--preview must be [HOST:]PORT"),
            (f"127.0.0.1:{port}", f"--preview 127.0.0.1:{port}: the port is in use; give another, or 0 for any"),
            ("192.0.2.1:0", "--preview 192.0.2.1:0: cannot listen there"),  # no address of this machine
        ]
        # No model folder and no clip: each is refused before either is opened.
        argv = ["matte", "clip.mp4", "--model", str(tmp_path / "no-model"), "--output", str(tmp_path / "o.mp4")]
        command = [SPGIM, *argv, "--preview"]
        with ThreadPoolExecutor(len(cases)) as pool:
            results = pool.map(lambda case: subprocess.run([*command, case[0]], capture_output=True, text=True), cases)
            for (_, message), result in zip(cases, results, strict=True):
                assert result.returncode != 0 and "Traceback" not in result.stderr
                assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


# --- the server on its own ----------------------------------------------------------------------


def test_addresses() -> None:
    assert PreviewAddress.parse("8080") == PreviewAddress("127.0.0.1", 8080)
    assert PreviewAddress.parse("0.0.0.0:80") == PreviewAddress("0.0.0.0", 80)
    assert PreviewAddress.parse("[::1]:0") == PreviewAddress("::1", 0)
    assert PreviewAddress("::1", 9).url() == "http://[::1]:9/" and str(PreviewAddress("h", 1)) == "h:1"
    for bad in ("", "nonsense", ":80", "host:", "65536", "-1", "1.5", "host:port"):
        with pytest.raises(ValueError):
            PreviewAddress.parse(bad)
    assert main(["matte", "c.mp4", "--model", "m", "--output", "o.mp4", "--preview", "h:x"]) == 1
    assert PreviewOptions().address is None


def _frame(number: int, size: tuple[int, int] = (1280, 720)) -> VideoFrame:
    rng = np.random.default_rng(number)
    rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    alpha = rng.random((size[1], size[0]), dtype=np.float32)
    return VideoFrame(number, rgb, number, Fraction(1, 25), time.monotonic(), alpha)


def _parts(port: int, path: str) -> Iterator[bytes]:
    """The JPEGs of an MJPEG stream."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path)
    answer = connection.getresponse()
    assert answer.status == 200 and answer.getheader("Content-Type", "").startswith("multipart/x-mixed-replace")
    while True:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += answer.read(1)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        yield answer.read(length)
        answer.read(2)


def test_nothing_is_encoded_until_a_picture_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[tuple[int, ...]] = []
    encode = preview.encode_jpeg

    def counted(image: np.ndarray, *args: Any) -> bytes:
        encoded.append(image.shape)
        return encode(image, *args)

    monkeypatch.setattr(preview, "encode_jpeg", counted)
    with PreviewServer(PreviewAddress("127.0.0.1", 0)) as server:
        for number in range(50):
            server.show(_frame(number), {})
        assert not encoded
        server.follow(lambda: {"frames_out": 50}, rotation=90)
        assert server.stats() == {"state": "running", "figures": {"frames_out": 50}}
        pictures = _parts(server.port, "/alpha.mjpg")
        showing = threading.Event()

        def keep_showing() -> None:
            number = 50
            while not showing.is_set():
                server.show(_frame(number), {})
                number += 1
                time.sleep(0.02)

        shower = threading.Thread(target=keep_showing)
        shower.start()
        try:
            first = cv2.imdecode(np.frombuffer(next(pictures), np.uint8), cv2.IMREAD_UNCHANGED)
        finally:
            showing.set()
            shower.join()
    # The alpha as greyscale, turned upright, 400 px on its longer side (the composite gets 640).
    assert first is not None and first.shape == (400, 225)
    assert encoded and all(shape == (720, 1280) for shape in encoded)


def test_close_ends_a_stalled_client_and_the_page_says_starting_first() -> None:
    server = PreviewServer(PreviewAddress("127.0.0.1", 0))
    assert server.url == f"http://127.0.0.1:{server.port}/" and server.stats() == {"state": "starting"}
    page = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    page.request("GET", "/nowhere")
    assert page.getresponse().status == 404
    stalled = _stall(server.url, "/composite.mjpg")
    noise = [_frame(number) for number in range(4)]  # noise: large JPEGs fill the socket at once
    for number in range(40):
        server.show(noise[number % 4], {})
        time.sleep(0.02)
    closing = threading.Thread(target=server.close)
    closing.start()
    closing.join(WAIT_S)
    assert not closing.is_alive(), "close() waited for a stalled client"
    with stalled, contextlib.suppress(ConnectionResetError):
        stalled.settimeout(WAIT_S)
        while stalled.recv(1 << 16):  # what was sent, then the end: the server cut the connection
            pass
    server.close()  # twice is fine


def test_a_port_in_use_in_python_is_the_same_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = PreviewAddress("127.0.0.1", taken.getsockname()[1])
        with pytest.raises(SpgimError, match=rf"^--preview {address}: the port is in use"):
            PreviewServer(address)
