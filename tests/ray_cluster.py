"""A real Ray cluster on loopback for the batch tests: ``ray start`` nodes, each in its own session, stopped by
killing that session's processes (never ``ray stop``, which kills every Ray process on the machine by name).

Every node runs with token authentication (``RAY_AUTH_MODE=token`` and a token made for the test, passed in
the environment, so nothing is written to ``~/.ray``); the driver the test starts gets the same environment
from :meth:`RayCluster.env`. Ports the head would otherwise take at fixed numbers (the client server, the
dashboard agent) are picked free, so a cluster here never collides with another on the machine.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from loopback import free_port
from requirements import unavailable

HOST = "127.0.0.1"


def ray_command() -> str:
    """The ``ray`` CLI of the interpreter running the tests (the ``[cluster]`` extra)."""
    found = Path(sys.executable).with_name("ray")
    if not found.exists():
        unavailable("Ray is not installed: pip install -e '.[cluster]' (make test installs it)")
    return str(found)


class RayNode:
    """One ``ray start`` node: its own temp folder and session."""

    def __init__(self, folder: Path, arguments: list[str], env: dict[str, str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "ray-start.log"
        # Short: Ray's socket paths under it must fit in 107 characters.
        self.temp = Path(tempfile.mkdtemp(prefix="spgim-ray-", dir="/tmp"))
        with self.log.open("wb") as log:
            process = subprocess.Popen(
                [ray_command(), "start", *arguments, f"--temp-dir={self.temp}", "--disable-usage-stats"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its daemons and workers stay in this session: found and killed together
            )
        self.session = process.pid
        if process.wait(timeout=90) != 0:
            self.kill()
            raise RuntimeError(f"ray start failed: {self.log.read_text()[-2000:]}")

    def pids(self) -> list[int]:
        """The node's live processes: its session (Ray's workers make process groups of their own)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) == self.session:
                        found.append(int(entry.name))
                except (ProcessLookupError, PermissionError):
                    continue
        return found

    def kill(self) -> None:
        """Kill every process of the node at once, as a machine that dies."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> None:
        """Delete the node's temp folder (after :meth:`kill`)."""
        shutil.rmtree(self.temp, ignore_errors=True)


class RayCluster:
    """A head and worker nodes on 127.0.0.1, each with ``cpus`` CPUs (the head's may differ)."""

    def __init__(self, folder: Path, *, head_cpus: int = 1) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self._env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.head_cpus = head_cpus
        self.nodes: list[RayNode] = []

    def env(self) -> dict[str, str]:
        """The environment a driver needs to join (the cluster's token)."""
        return dict(self._env)

    def _ports(self) -> list[str]:
        return [
            f"--node-ip-address={HOST}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    def start(self) -> RayCluster:
        """Start the head."""
        arguments = [
            "--head",
            f"--port={self.port}",
            f"--num-cpus={self.head_cpus}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            *self._ports(),
        ]
        self.nodes.append(RayNode(self.folder / "head", arguments, self._env))
        return self

    def add_node(self, cpus: int = 1) -> RayNode:
        """Start one more node joining the head."""
        node = RayNode(
            self.folder / f"node{len(self.nodes)}",
            [f"--address={self.address}", f"--num-cpus={cpus}", *self._ports()],
            self._env,
        )
        self.nodes.append(node)
        return node

    def wait_for_nodes(self, count: int, timeout: float = 60.0) -> None:
        """Return once ``count`` nodes are alive (as the cluster itself reports)."""
        code = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR'); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(
                [sys.executable, "-c", code, self.address], capture_output=True, text=True, env=self._env, timeout=60
            )
            if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the cluster never had {count} nodes: {result.stdout[-500:]} {result.stderr[-1000:]}"
                )
            time.sleep(1.0)

    def stop(self) -> None:
        """Kill every node (workers first), by session."""
        for node in reversed(self.nodes):
            node.kill()
        time.sleep(0.5)
        for node in self.nodes:
            node.remove()

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
