"""A real ``tritonserver`` process over a model repository: started, waited for, stopped.

The binary comes from the ``nvidia-pytriton`` wheel (``pip install --no-deps nvidia-pytriton==0.7.0``:
the wheel declares numpy<2, spgim needs numpy>=2.1, and only its server binary is used). The wheel
keeps the Python backend and its per-version stubs apart, so :class:`TritonServer` assembles a backend
directory in a temporary folder (``python/``: ``libtriton_python.so``, ``triton_python_backend_utils.py``
and the stub of the running interpreter's version) and starts the server with:

- ``LD_LIBRARY_PATH``: this interpreter's ``LIBDIR`` first (else the stub loads the system's libpython,
  whose version differs from our standard library: models fail with ``'_thread.RLock' object has no
  attribute '_recursion_count'``), then the wheel's ``nvidia_pytriton.libs``;
- ``PYTHONPATH``: this environment's site-packages (the model imports spgim from there), and the
  environment's ``bin`` first on ``PATH``.

Every endpoint binds 127.0.0.1 unless another address is asked for (the server's own default is
0.0.0.0). The server runs in its own session, its output goes to a log file, and :meth:`TritonServer.stop`
sends SIGTERM, then SIGKILL to its whole process group (the stubs too) after a grace period.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from spgim.errors import SpgimError

INSTALL_HINT = "pip install --no-deps nvidia-pytriton==0.7.0"
LOOPBACK = "127.0.0.1"


def pytriton_root() -> Path:
    """The nvidia-pytriton wheel's ``pytriton`` folder (found, not imported), or one line on how to install it."""
    spec = importlib.util.find_spec("pytriton")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise SpgimError(f"tritonserver is not installed; install it with: {INSTALL_HINT}")
    return Path(locations[0])


def find_tritonserver(binary: str | Path | None = None) -> Path:
    """The ``tritonserver`` executable: ``binary`` if given, else the nvidia-pytriton wheel's."""
    path = Path(binary) if binary is not None else pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not path.is_file() or not os.access(path, os.X_OK):
        hint = "" if binary is not None else f"; install it with: {INSTALL_HINT}"
        raise SpgimError(f"no tritonserver executable at {path}{hint}")
    return path


def python_backend_files(root: Path | None = None) -> list[Path]:
    """The Python backend's library and utilities and the stub for this interpreter's version, from the wheel."""
    root = root or pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = [
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        root / "python_backend_stubs" / version / "triton_python_backend_stub",
    ]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SpgimError(f"the Python backend for Python {version} is incomplete, missing {', '.join(missing)}")
    return files


def server_environment(site_packages: Path) -> dict[str, str]:
    """The server's environment: this one, with the library path, ``PYTHONPATH`` and ``PATH`` the stub needs."""
    environment = dict(os.environ)
    libraries = [str(sysconfig.get_config_var("LIBDIR") or ""), str(site_packages / "nvidia_pytriton.libs")]
    inherited = environment.get("LD_LIBRARY_PATH")
    environment["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libraries if p] + ([inherited] if inherited else []))
    environment["PYTHONPATH"] = str(site_packages)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    return environment


def _probe_host(address: str) -> str:
    """Where to reach a server bound to ``address`` from this machine."""
    if address in ("0.0.0.0", ""):
        return LOOPBACK
    if address == "::":
        return "[::1]"
    return f"[{address}]" if ":" in address else address


class TritonServer:
    """``tritonserver`` over ``repository``, on loopback ports unless another address is given.

    Args:
        repository: the model repository (e.g. from :func:`spgim.serving.repository.write_repository`).
        http_port, grpc_port, metrics_port: the endpoints' ports.
        address: the address every endpoint binds (127.0.0.1 by default; 0.0.0.0 only when asked).
        binary: the ``tritonserver`` executable (default: the nvidia-pytriton wheel's).
        log_path: where the server's output goes (default: ``tritonserver.log`` in the server's temporary
            folder, kept after :meth:`stop` so that it can be read).
        ready_timeout: seconds :meth:`start` waits for ``/v2/health/ready``.
        models: load only these models of the repository (Triton's explicit model control; None: every model).
        stop_grace: seconds :meth:`stop` waits after SIGTERM before SIGKILL.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        address: str = LOOPBACK,
        binary: str | Path | None = None,
        log_path: str | Path | None = None,
        ready_timeout: float = 120.0,
        models: Sequence[str] | None = None,
        stop_grace: float = 10.0,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.address = address
        self.binary = binary
        self.log_path = Path(log_path) if log_path is not None else None
        self.ready_timeout = ready_timeout
        self.models = None if models is None else tuple(models)
        self.stop_grace = stop_grace
        self._process: subprocess.Popen[bytes] | None = None
        self._backends: Path | None = None

    @property
    def http_url(self) -> str:
        """The HTTP/REST endpoint, ``http://ADDRESS:PORT``."""
        return f"http://{_probe_host(self.address)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """The gRPC endpoint as ``tritonclient.grpc`` takes it, ``ADDRESS:PORT``."""
        return f"{_probe_host(self.address)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus metrics page."""
        return f"http://{_probe_host(self.address)}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """The server's process id while it was started (None before :meth:`start` and after :meth:`stop`)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self, binary: Path, backends: Path) -> list[str]:
        """The server's command line."""
        return [
            str(binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends.resolve()}",
            f"--http-address={self.address}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.address}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={max(1, round(self.stop_grace))}",
            *(() if self.models is None else ("--model-control-mode=explicit",)),
            *(f"--load-model={name}" for name in self.models or ()),
        ]

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready; returns ``self``. Failing: one line with the log's tail."""
        if self.running:
            raise SpgimError("this tritonserver is already running")
        if not self.repository.is_dir():
            raise SpgimError(f"model repository {self.repository} does not exist")
        binary = find_tritonserver(self.binary)
        files = python_backend_files()
        site_packages = pytriton_root().parent
        work = Path(tempfile.mkdtemp(prefix="spgim-triton-"))
        self._backends = work / "backends"
        (self._backends / "python").mkdir(parents=True)
        for source in files:
            shutil.copy2(source, self._backends / "python" / source.name)
        if self.log_path is None:
            self.log_path = work / "tritonserver.log"
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.command(binary, self._backends),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(site_packages),
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        url = f"{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise SpgimError(
                    f"tritonserver exited with code {self._process.returncode} before it was ready: "
                    f"{self.log_tail()}; log: {self.log_path}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise SpgimError(
            f"tritonserver was not ready within {self.ready_timeout:g} s: {self.log_tail()}; log: {self.log_path}"
        )

    def log_tail(self, lines: int = 3) -> str:
        """The last ``lines`` non-empty lines of the server's log, on one line."""
        if self.log_path is None or not self.log_path.is_file():
            return "no log"
        text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        tail = [" ".join(line.split()) for line in text if line.strip()][-lines:]
        return " | ".join(tail) or "empty log"

    def stop(self) -> None:
        """SIGTERM the server, SIGKILL its process group after the grace period; remove the backends (not the log)."""
        process, self._process = self._process, None
        if process is not None:
            try:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(self.stop_grace)
            finally:  # a second Ctrl-C while waiting must not leave the server running in its own session
                # The server leads its own session: the group holds it and its backend stubs, which must not outlive it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._backends is not None:
            shutil.rmtree(self._backends, ignore_errors=True)
            with contextlib.suppress(OSError):  # the temporary folder goes too, unless the log lives there
                self._backends.parent.rmdir()
            self._backends = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
