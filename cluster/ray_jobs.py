"""The batch on Ray: connecting to (or starting) a cluster, one task per recorded input, one actor per live one.

Only this module imports Ray. A recorded input is a Ray task with ``max_retries``: Ray runs it again on another
worker when its worker process or node dies, while an input that is itself bad returns a ``failed`` record
instead of raising, so it is never retried. A live input is a threaded actor with ``max_restarts``: Ray
restarts it on another node, and the driver calls its ``run`` again (Ray fails the call that was running with
``ActorUnavailableError`` rather than retrying it), which continues into a new segment. The driver's Ctrl-C
cancels the tasks (a running job finalises its outputs, as ``spgim matte`` does) and calls each actor's ``stop``.
"""

from __future__ import annotations

import os
from typing import Any

from spgim.errors import SpgimError

from .work import JobSpec, StreamWorker, run_file

EXTRA = "pip install 'spgim[cluster]'"


def import_ray() -> Any:
    """Ray, or one line naming the extra that installs it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent home from a batch
    try:
        import ray
    except ImportError:
        raise SpgimError(f"spgim batch runs on Ray, which is not installed: {EXTRA}") from None
    return ray


def connect(address: str | None, cpus: int) -> tuple[Any, bool]:
    """Join the cluster at ``address``, or start a local single-node Ray for this batch (None).

    Returns Ray and whether this call started it (then :func:`disconnect` stops it).

    Raises:
        SpgimError: the cluster cannot be reached, or no node has ``cpus`` CPUs for one job.
    """
    ray = import_ray()
    quiet = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # Local: the dashboard off, the node on loopback. Ray's own servers listen on all interfaces
            # whatever the node address; its token authentication (on by default) guards them (docs/batch.md).
            ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    except SpgimError:
        raise
    except Exception as error:  # ConnectionError, AuthenticationError, RuntimeError: Ray's own wording
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise SpgimError(f"cannot start or reach {where}: {_first_line(error)}") from None
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if largest < cpus:
        disconnect(ray)
        raise SpgimError(f"no node has {cpus} CPUs for one job (the largest has {largest:g}): lower --cpus-per-job")
    return ray, not address


def disconnect(ray: Any) -> None:
    """Leave the cluster; a local Ray started by :func:`connect` stops with it."""
    ray.shutdown()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _node() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def _file_task(spec: JobSpec) -> dict[str, Any]:
    return run_file(spec, _node())


class _StreamActor(StreamWorker):
    def run_here(self, spec: JobSpec) -> dict[str, Any]:
        return self.run(spec, _node())


_REMOTE: dict[str, Any] = {}  # the remote function and actor class, made once per driver process


def submit_file(ray: Any, spec: JobSpec, cpus: int, retries: int) -> Any:
    """Start the task for a recorded input; its object ref."""
    task = _REMOTE.setdefault("file", ray.remote(_file_task))
    return task.options(num_cpus=cpus, max_retries=retries, retry_exceptions=False).remote(spec)


def submit_stream(ray: Any, spec: JobSpec, cpus: int, retries: int) -> tuple[Any, Any]:
    """Start the actor for a live input and its ``run``; the actor and the run's object ref."""
    actor_class = _REMOTE.setdefault("stream", ray.remote(_StreamActor))
    actor = actor_class.options(num_cpus=cpus, max_restarts=retries, max_task_retries=0, max_concurrency=2).remote()
    return actor, actor.run_here.remote(spec)


def lost_reason(error: BaseException) -> str:
    """One line for a job Ray gave up on (its worker or node lost more times than ``--retries``)."""
    return _first_line(error)
