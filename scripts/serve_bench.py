"""Many live streams at once: N ``spgim matte`` processes with the model in each (local) against N thin
``spgim matte --server`` clients of one ``spgim serve`` (served): frames out per second, dropped frames,
latency and memory, for each N.

    .venv/bin/python scripts/serve_bench.py --model EXPORT [--streams 1,2,4] [--seconds 20] [--size 320x192]
        [--fps 25] [--backend onnxruntime] [--keyframe-interval K] [--instances N] [--threads T]
        [--json serve-bench.json]

The source clip comes from ``spgim data clip`` (seed 0, at most 30 s; the senders loop it). Each stream is a
real live source: its own ``tests/loopback.py`` sender (realtime-paced MPEG-TS over TCP on 127.0.0.1, no
audio), all started once for the whole run. For each N, both arms start their N ``spgim matte tcp://...
--live --duration S --alpha streamK.mkv`` processes at the same moment (the alpha as H.264, ultrafast: the
cheapest output); local first, then served. The served arm gets a fresh server per N (the model repository of
``spgim.serving.repository.write_repository`` under ``spgim.serving.server.TritonServer``, free loopback
ports, ready before the clients start), so no N inherits another's memory; one second of the clip matted through
it as a file first warms it up (the engines' first calls), as the local processes' model loading is outside
their walls too.

Figures per arm: ``fps_sum`` is the sum over streams of each process's own frames out / its wall (the figure
of ``spgim matte``'s summary line, model loading not included); ``fps_common`` is all frames out / the arm's
wall from the launch to the last exit (start-up included); dropped frames and each stream's latency p50/p90
(capture to written) come from the summary lines, and with a server its round trip p50/p90. Memory is PSS
(``/proc/PID/smaps_rollup``) sampled every 0.5 s and summed over the arm's processes at each sample; the peak
of that sum: the N matte processes (local), or the server's session (tritonserver and its Python backend
stubs) plus the N clients (served). The ratios are served / local within this one run. Linux only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from loopback import LoopbackSender, free_port  # noqa: E402

from spgim.machine import cpu_facts  # noqa: E402
from spgim.serving.options import ServerOptions  # noqa: E402
from spgim.serving.repository import write_repository  # noqa: E402
from spgim.serving.server import TritonServer  # noqa: E402
from spgim.streaming.options import EngineOptions, MattingOptions  # noqa: E402

SPGIM = [sys.executable, "-m", "spgim"]
SAMPLE_S = 0.5
MAX_CLIP_S = 30.0  # longer runs loop the clip
GRACE_S = 180.0  # beyond --seconds: start-up, model loading, finishing the outputs

_SUMMARY = re.compile(
    r"(?P<frames_in>\d+) frames in, (?P<frames_out>\d+) out, (?P<dropped>\d+) dropped, (?P<corrupt>\d+) corrupt "
    r"skipped, (?P<fps>[\d.]+) fps, (?P<wall_s>[\d.]+) s wall"
)
_FIELDS = {
    "keyframes": re.compile(r"SPD on (\d+) keyframes \(interval (\d+)"),
    "latency": re.compile(r"latency p50 (\d+) ms p90 (\d+) ms"),
    "reconnects": re.compile(r"(\d+) reconnects"),
    "startup": re.compile(r"first frame after ([\d.]+) s"),
    "server": re.compile(r"server round trip p50 (\d+) ms p90 (\d+) ms"),
}

_children: list[subprocess.Popen[bytes]] = []  # every matte process started, for the clean-up
_servers: list[TritonServer] = []  # stopped again at the end: a signal inside stop() can skip its clean-up


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _session_pids(session: int) -> list[int]:
    """Every live process whose session id is ``session`` (the server leads its own: it and its stubs)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and int(fields[3]) == session:
            pids.append(int(entry.name))
    return pids


def _label(pid: int) -> str:
    """A server process's name: ``tritonserver``, or the backend stub with its model's folder."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return str(pid)
    label = Path(argv[0]).name
    if len(argv) > 1 and argv[1].endswith("model.py"):
        label += f" {Path(argv[1]).parent.parent.name}"
    return label


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's session (each child leads one), SIGKILL after 5 s."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _parse(text: str) -> dict[str, Any]:
    """The figures of ``spgim matte``'s summary line (its last one on stderr)."""
    lines = [line for line in text.splitlines() if _SUMMARY.search(line)]
    if not lines:
        return {}
    line = lines[-1]
    found = _SUMMARY.search(line)
    assert found is not None
    figures: dict[str, Any] = {k: (float(v) if "." in v else int(v)) for k, v in found.groupdict().items()}
    if match := _FIELDS["keyframes"].search(line):
        figures["keyframes"], figures["keyframe_interval"] = int(match[1]), int(match[2])
    if match := _FIELDS["latency"].search(line):
        figures["latency_p50_ms"], figures["latency_p90_ms"] = int(match[1]), int(match[2])
    if match := _FIELDS["reconnects"].search(line):
        figures["reconnects"] = int(match[1])
    if match := _FIELDS["startup"].search(line):
        figures["first_frame_s"] = float(match[1])
    if match := _FIELDS["server"].search(line):
        figures["server_round_trip_p50_ms"], figures["server_round_trip_p90_ms"] = int(match[1]), int(match[2])
    figures["summary"] = line.split(": ", 2)[-1]
    return figures


def run_arm(commands: list[list[str]], logs: list[Path], seconds: float, server: TritonServer | None) -> dict[str, Any]:
    """Start ``commands`` at once, sample their PSS (and the server's session's) until all exit; the arm's figures."""
    handles = [log.open("wb") for log in logs]
    began = time.monotonic()
    processes = []
    try:
        for command, handle in zip(commands, handles, strict=True):
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True
            )
            _children.append(process)
            processes.append(process)
        peak = peak_clients = peak_server = 0
        samples = 0
        deadline = began + seconds + GRACE_S
        while any(p.poll() is None for p in processes):
            if time.monotonic() > deadline:
                raise SystemExit(f"the matte processes did not end within {seconds + GRACE_S:g} s")
            clients = sum(_pss_kib(p.pid) for p in processes if p.poll() is None)
            served = sum(_pss_kib(pid) for pid in _session_pids(server.pid)) if server and server.pid else 0
            peak, peak_clients, peak_server = (
                max(peak, clients + served),
                max(peak_clients, clients),
                max(peak_server, served),
            )
            samples += 1
            time.sleep(SAMPLE_S)
        wall = time.monotonic() - began
    finally:
        for handle in handles:
            handle.close()
    streams = []
    for process, log in zip(processes, logs, strict=True):
        text = log.read_text(errors="replace")
        figures = _parse(text)
        if not figures:
            tail = " | ".join(line for line in text.splitlines()[-5:] if line.strip())
            raise SystemExit(f"{log.stem}: spgim matte exited {process.returncode} without a summary: {tail}")
        streams.append({"exit": process.returncode, **figures})
    frames_out = sum(s["frames_out"] for s in streams)
    p50s = [s["latency_p50_ms"] for s in streams if "latency_p50_ms" in s]
    arm: dict[str, Any] = {
        "fps_sum": round(sum(s["fps"] for s in streams), 2),
        "fps_common": round(frames_out / wall, 2),
        "wall_s": round(wall, 2),
        "frames_in": sum(s["frames_in"] for s in streams),
        "frames_out": frames_out,
        "dropped": sum(s["dropped"] for s in streams),
        "latency_p50_ms": p50s,
        "latency_p90_ms": [s["latency_p90_ms"] for s in streams if "latency_p90_ms" in s],
        "latency_p50_ms_median": statistics.median(p50s) if p50s else None,
        "peak_pss_mib": round(peak / 1024, 1),
        "pss_samples": samples,
    }
    if server is not None:
        arm["peak_pss_clients_mib"] = round(peak_clients / 1024, 1)
        arm["peak_pss_server_mib"] = round(peak_server / 1024, 1)
        trips = [s for s in streams if "server_round_trip_p50_ms" in s]
        arm["server_round_trip_p50_ms"] = [s["server_round_trip_p50_ms"] for s in trips]
        arm["server_round_trip_p90_ms"] = [s["server_round_trip_p90_ms"] for s in trips]
    arm["streams"] = streams
    return arm


def _ratio(served: float, local: float) -> float | None:
    return round(served / local, 3) if local else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="an spgim export folder")
    parser.add_argument("--streams", default="1,2,4", help="stream counts, comma-separated (default 1,2,4)")
    parser.add_argument("--seconds", type=float, default=20.0, help="each stream's --duration (default 20)")
    parser.add_argument("--size", default="320x192", help="the source's WxH (default 320x192)")
    parser.add_argument("--fps", default="25", help="the source's frame rate (default 25)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--keyframe-interval", type=int, help="default: the export's")
    parser.add_argument("--instances", type=int, default=1, help="the server's model instances (default 1)")
    parser.add_argument("--threads", type=int, default=0, help="model threads per process or instance (0: default)")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args()
    counts = [int(n) for n in args.streams.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        parser.error(f"--streams needs positive counts, got {args.streams!r}")
    rate = Fraction(args.fps)
    frames = math.ceil(rate * min(args.seconds + 5, MAX_CLIP_S))
    model = args.model.resolve()
    keyframes = [] if args.keyframe_interval is None else ["--keyframe-interval", str(args.keyframe_interval)]
    engine = ["--backend", args.backend, *keyframes, *(["--threads", str(args.threads)] if args.threads else [])]
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_facts(),
        "args": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "clip_frames": frames},
        "results": {},
    }
    signal.signal(signal.SIGTERM, _terminated)
    work = Path(tempfile.mkdtemp(prefix="spgim-serve-bench-"))
    try:
        clip = work / "clip.mp4"
        render = ["--frames", str(frames), "--size", args.size, "--fps", args.fps, "--seed", "0"]
        subprocess.run([*SPGIM, "data", "clip", "--out", str(clip), *render], check=True, capture_output=True)
        with contextlib.ExitStack() as stack:
            senders = [
                stack.enter_context(LoopbackSender(clip, realtime=True, loop=True, audio=False))
                for _ in range(max(counts))
            ]

            def matte(name: str, n: int, *engine: str) -> tuple[list[list[str]], list[Path]]:
                out = work / name
                out.mkdir()
                commands = [
                    [*SPGIM, "matte", senders[k].url, "--live", "--duration", f"{args.seconds:g}", "--quiet",
                     "--alpha", str(out / f"stream{k}.mkv"), *engine]
                    for k in range(n)
                ]  # fmt: skip
                return commands, [out / f"stream{k}.log" for k in range(n)]

            for n in counts:
                commands, logs = matte(f"local{n}", n, "--model", str(model), *engine)
                local = run_arm(commands, logs, args.seconds, None)
                _line(n, "local", local)
                repository = write_repository(
                    model,
                    work / f"repository{n}",
                    EngineOptions(backend=args.backend, threads=args.threads),
                    MattingOptions(keyframe_interval=args.keyframe_interval),
                    ServerOptions(instances=args.instances),
                )
                ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
                server = TritonServer(repository, **ports, log_path=work / f"tritonserver{n}.log", stop_grace=5)
                _servers.append(server)
                with server:
                    assert server.pid is not None
                    warm = [*SPGIM, "matte", str(clip), "--server", server.grpc_url, "--duration", "1", "--quiet",
                            "--alpha", str(work / f"warm-up{n}.mkv")]  # fmt: skip
                    started = time.monotonic()
                    subprocess.run(warm, check=True, capture_output=True, timeout=GRACE_S)
                    warm_up_s = time.monotonic() - started
                    time.sleep(1.0)
                    idle = {f"{_label(pid)} ({pid})": _pss_kib(pid) for pid in _session_pids(server.pid)}
                    commands, logs = matte(f"served{n}", n, "--server", server.grpc_url)
                    served = run_arm(commands, logs, args.seconds, server)
                    served["server_warm_up_s"] = round(warm_up_s, 2)
                    served["server_idle_pss_mib"] = round(sum(idle.values()) / 1024, 1)
                    served["server_idle_pss_by_process_mib"] = {k: round(v / 1024, 1) for k, v in idle.items()}
                _line(n, "served", served)
                report["results"][str(n)] = {
                    "local": local,
                    "served": served,
                    "ratios_served_vs_local": {
                        "fps_sum": _ratio(served["fps_sum"], local["fps_sum"]),
                        "fps_common": _ratio(served["fps_common"], local["fps_common"]),
                        "peak_pss": _ratio(served["peak_pss_mib"], local["peak_pss_mib"]),
                    },
                }
    finally:
        for process in _children:
            _stop(process)
        for server in _servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def _terminated(number: int, frame: Any) -> None:
    """SIGTERM: clean up as on Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    print("serve_bench: terminated; stopping every process it started", file=sys.stderr, flush=True)
    sys.exit(128 + number)


def _line(n: int, arm: str, figures: dict[str, Any]) -> None:
    print(
        f"{n} stream(s), {arm}: {figures['fps_sum']} frames/s (sum), {figures['dropped']} dropped, "
        f"latency p50 {figures['latency_p50_ms']} ms, peak PSS {figures['peak_pss_mib']} MiB",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    main()
