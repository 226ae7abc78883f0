"""Worker processes for the demo: ``python -m optimum_bridge.cli worker`` children with a clean environment.

Each child gets only the demo's settings (inherited ``OPTIMUM_*``/``BRIDGE_*``/
``SENTRY_*`` variables are dropped) and runs in a scratch directory, so a
``.env`` in the user's working directory cannot leak real credentials into a
sandbox run. Children run in their own session: Ctrl-C reaches the demo only,
which then stops them in order (SIGTERM, a bounded wait, SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

import optimum_bridge

from ..keys import Keys

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0


class WorkerFailed(RuntimeError):
    """A worker exited or did not become ready; the message ends with its last log lines."""


@dataclass
class WorkerProcess:
    """One worker child and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def tail(self, lines: int = 5) -> str:
        """The last lines of its log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def worker_env(base: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """``base`` without bridge settings, plus ``settings`` and an import path to this package."""
    env = {k: v for k, v in base.items() if not k.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_"))}
    env.update(settings)
    source_root = str(Path(optimum_bridge.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_workers(count: int, *, concurrency: int, env: Mapping[str, str], workdir: Path) -> list[WorkerProcess]:
    """Start ``count`` worker processes with a threads pool of ``concurrency`` each."""
    run = uuid.uuid4().hex[:6]
    started = []
    for index in range(count):
        name = f"demo{index + 1}-{run}"
        log_path = workdir / f"{name}.log"
        args = [
            sys.executable, "-m", "optimum_bridge.cli", "worker",
            "--pool", "threads", "-c", str(concurrency), "-n", f"{name}@%h",
            "--loglevel", "INFO", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                args,
                env=dict(env),
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        started.append(WorkerProcess(name, process, log_path))
    return started


def wait_ready(
    workers: list[WorkerProcess], client: redis.Redis, keys: Keys, *, timeout_s: float = READY_TIMEOUT_S
) -> None:
    """Wait until every worker sends its heartbeat; ``WorkerFailed`` if one exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        for worker in workers:
            if worker.process.poll() is not None:
                raise WorkerFailed(
                    f"worker {worker.name} exited with code {worker.process.returncode}:\n{worker.tail()}"
                )
        if int(client.zcard(keys.workers)) >= len(workers):
            return
        if time.monotonic() > deadline:
            raise WorkerFailed(f"workers not ready after {timeout_s:.0f}s:\n{workers[0].tail()}")
        time.sleep(0.1)


def stop_workers(workers: list[WorkerProcess], *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every worker, wait up to ``grace_s`` in total, then SIGKILL the stragglers."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in workers:
        try:
            worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait(10)
