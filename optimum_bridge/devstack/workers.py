"""Worker processes: ``python -m optimum_bridge.cli worker ...`` children, each with its log file.

The environment comes from ``env.child_env`` (no inherited bridge settings,
this source tree on ``PYTHONPATH``). Each child runs in its own session, so
Ctrl-C reaches only its parent, which stops it: SIGTERM, a bounded wait,
SIGKILL. When a worker counts as ready is the caller's to say (a log line, a
heartbeat in Redis, a file written by a ``worker_ready`` handler).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from optimum_bridge.devstack.processes import spawn, stop_process, tail
from optimum_bridge.devstack.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

BRIDGE_WORKER = (sys.executable, "-m", "optimum_bridge.cli", "worker")
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 30.0


class WorkerFailed(RuntimeError):
    """A worker exited or did not become ready; the message ends with its last log lines."""


@dataclass
class WorkerProcess:
    """One worker child and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Its whole log so far."""
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        return tail(self.log_path, lines)

    def check_running(self) -> None:
        """``WorkerFailed`` (with its last log lines) if it has exited."""
        if self.process.poll() is not None:
            raise WorkerFailed(f"worker {self.name} exited with code {self.process.returncode}:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = STOP_GRACE_S) -> int:
        """Send ``sig``, wait up to ``timeout`` s, then SIGKILL; its exit code."""
        return stop_process(self.process, sig=sig, grace_s=timeout)


def worker_args(name: str, *, pool: str, concurrency: int, loglevel: str | None) -> list[str]:
    """The ``celery worker`` options every harness worker gets (no mingle/gossip: faster, quieter)."""
    args = ["--pool", pool, "-c", str(concurrency), "-n", f"{name}@%h"]
    if loglevel is not None:
        args += ["--loglevel", loglevel]
    return [*args, "--without-mingle", "--without-gossip"]


def start_worker(
    env: Mapping[str, str],
    *,
    name: str,
    workdir: Path,
    pool: str = "threads",
    concurrency: int = 4,
    loglevel: str | None = None,
    command: Sequence[str] = BRIDGE_WORKER,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> WorkerProcess:
    """Start ``command`` + the worker options as ``name``, logging to ``workdir/<name>.log``.

    ``command`` is the bridge's worker by default; the benchmarks put their own
    entry point in front. ``cwd`` defaults to ``workdir``, so no ``.env`` of
    the caller's working directory is read.
    """
    log_path = workdir / f"{name}.log"
    args = [*command, *worker_args(name, pool=pool, concurrency=concurrency, loglevel=loglevel)]
    process = spawn(args, log_path=log_path, env=env, cwd=cwd or workdir, die_with_parent=die_with_parent)
    log.debug("worker %s started (pid %s)", name, process.pid)
    return WorkerProcess(name, process, log_path)


def wait_ready(
    workers: Sequence[WorkerProcess], ready: Callable[[], bool], *, timeout: float = READY_TIMEOUT_S
) -> None:
    """Wait until ``ready()``; ``WorkerFailed`` as soon as a worker exits, or when time runs out."""

    def check() -> bool:
        for worker in workers:
            worker.check_running()
        return ready()

    try:
        wait_until(check, timeout=timeout, interval=0.05, what=f"{len(workers)} worker(s)")
    except WaitTimeout as exc:
        last = workers[0].tail(5) if workers else ""
        raise WorkerFailed(f"workers not ready after {timeout:.0f}s:\n{last}") from exc


def stop_workers(workers: Iterable[WorkerProcess], *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM them all at once, wait up to ``grace_s`` in total, then SIGKILL the stragglers."""
    listed = list(workers)
    for worker in listed:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in listed:
        stop_process(worker.process, grace_s=max(0.1, deadline - time.monotonic()), signalled=True)
