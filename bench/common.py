"""Shared process management of the benchmarks: private Redis, sandbox, workers, environments.

Every benchmark runs against things it starts itself and stops afterwards (also
on Ctrl-C): a private ``redis-server`` on a free port (no persistence), the
sandbox in its own process (``optimum-bridge sandbox``) and real Celery worker
processes (started through ``bench.worker_entry``). The pieces are the
development harness's (``optimum_bridge.devstack``), shared with the demo and
the tests; what is the bench's own is here: its defaults, the sandbox as a
process, the ready files and memory of its workers. Children die with the bench
(``PR_SET_PDEATHSIG``) and run in their own session, so Ctrl-C reaches only the
bench, which then stops them in order. Nothing talks to anything but 127.0.0.1.
The callback receiver is in ``receiver``, results and tables in ``report``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil  # type: ignore[import-untyped]

from optimum_bridge import devstack as harness
from optimum_bridge.devstack import (
    LOOPBACK,
    RedisServer,
    WorkerProcess,
    free_port,
    stop_workers,
    wait_until,
)
from optimum_bridge.devstack.env import BRIDGE_PREFIXES
from optimum_bridge.devstack.processes import spawn as _spawn
from optimum_bridge.devstack.processes import stop_process, tail
from optimum_bridge.keys import Keys
from optimum_bridge.process.metrics import Metrics
from optimum_bridge.sandbox.fleet import generate_fleet

from .report import ROOT

CALLBACK_SECRET = harness.new_callback_secret(b"bench-callback-secret-0123456789")
WorkerKind = Literal["bridge", "plain", "instrumented"]
WORKER_STOP_GRACE_S = 20.0


def finished_counts(client: Any, keys: Keys) -> list[float]:
    """Jobs succeeded and failed so far, read through ``Metrics.snapshot`` (which folds the pending counts)."""
    counters = Metrics(client, keys).snapshot()
    return [counters.get("jobs:succeeded", 0.0), counters.get("jobs:failed", 0.0)]


def spawn(args: Sequence[str], *, env: Mapping[str, str] | None, cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own session, logging to ``log_path``, dying with the bench."""
    return _spawn(args, env=env, cwd=cwd, log_path=log_path, die_with_parent=True)


def start_redis(workdir: Path) -> RedisServer:
    """Start a private redis-server (``--save "" --appendonly no``) under ``workdir`` and wait until it answers."""
    return harness.start_redis("--appendonly", "no", parent_dir=workdir, die_with_parent=True)


# -- the sandbox, in its own process -----------------------------------------------------


@dataclass
class SandboxProc:
    """``optimum-bridge sandbox`` on a free port; knobs and stats through its admin API."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60, trust_env=False))

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def token_url(self) -> str:
        return self.url + "/connect/token"

    def stats(self) -> dict[str, Any]:
        """``GET /_sandbox/stats``: counters, ``max_in_window`` and the call log."""
        answer = self.http.get(self.url + "/_sandbox/stats")
        answer.raise_for_status()
        return dict(answer.json())

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change knobs (``quota``, ``latency_ms``, ``token_lifetime_s``...)."""
        answer = self.http.post(self.url + "/_sandbox/config", json=knobs)
        answer.raise_for_status()
        return dict(answer.json())

    def reset(self) -> None:
        """Clear counters, log, tokens and quota windows (knobs unchanged)."""
        self.http.post(self.url + "/_sandbox/reset").raise_for_status()

    def stop(self) -> None:
        self.http.close()
        stop_process(self.process, grace_s=10)


def start_sandbox(workdir: Path, **knobs: Any) -> SandboxProc:
    """Start the simulator (quota None = unlimited) and wait until its admin API answers."""
    port = free_port()
    args = [sys.executable, "-m", "optimum_bridge.cli", "sandbox", "--host", LOOPBACK, "--port", str(port)]
    args += ["--quota", str(knobs.pop("quota", None) or "none"), "--log-level", "warning"]
    log_path = workdir / f"sandbox-{port}.log"
    sandbox = SandboxProc(port, spawn(args, env=child_env({}), cwd=workdir, log_path=log_path), log_path)

    def answers() -> bool:
        if sandbox.process.poll() is not None:
            raise RuntimeError(f"sandbox exited:\n{tail(log_path)}")
        try:
            return sandbox.http.get(sandbox.url + "/_sandbox/config").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=30, what="the sandbox")
    if knobs:
        sandbox.configure(**knobs)
    return sandbox


# -- environments and settings ---------------------------------------------------------------


def child_env(settings: Mapping[str, str]) -> dict[str, str]:
    """This environment without bridge (or plain-Celery baseline) settings, plus ``settings``."""
    return harness.child_env(settings, drop=(*BRIDGE_PREFIXES, "PLAIN_"))


def env_with_path(settings: Mapping[str, str], pythonpath: str | None) -> dict[str, str]:
    """``child_env(settings)``, with ``pythonpath`` (when given) in front of its import path."""
    env = child_env(settings)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join((pythonpath, env["PYTHONPATH"]))
    return env


def ready_info(workdir: Path, worker: WorkerProcess) -> str:
    """What a worker wrote in its ready file: its pid and the ``optimum_bridge`` it imported."""
    return _ready_file(workdir, worker.name).read_text()


def bridge_settings(redis_url: str, sandbox: SandboxProc, **overrides: str) -> dict[str, str]:
    """The bridge's variables for a run against ``sandbox`` (overrides win)."""
    values = {"BRIDGE_LOG_LEVEL": "WARNING", **overrides}
    prefix = values.pop("BRIDGE_KEY_PREFIX", "bench:")
    return harness.bridge_settings(redis_url, sandbox, prefix=prefix, callback_secret=CALLBACK_SECRET, **values)


# -- worker processes ------------------------------------------------------------------------


def _ready_file(workdir: Path, name: str) -> Path:
    """Written by ``bench.worker_entry`` once the worker consumes (whatever its log level)."""
    return workdir / f"{name}.ready"


def start_workers(
    values: Mapping[str, str],
    *,
    count: int,
    concurrency: int,
    workdir: Path,
    pool: str = "threads",
    kind: WorkerKind = "bridge",
    loglevel: str = "WARNING",
    timeout: float = 90.0,
    pythonpath: str | None = None,
) -> list[WorkerProcess]:
    """Start ``count`` worker processes and wait until every one consumes.

    ``pythonpath`` goes in front of the import path: another ``optimum_bridge``
    there (an older commit's, extracted) is the one the workers run.
    """
    run = uuid.uuid4().hex[:6]
    start = functools.partial(
        harness.start_worker, env_with_path(values, pythonpath), workdir=workdir, pool=pool, concurrency=concurrency
    )
    workers: list[WorkerProcess] = []
    try:
        for index in range(count):
            name = f"{kind}{index + 1}-{run}"
            entry = [sys.executable, "-m", "bench.worker_entry", "--kind", kind]
            entry += ["--ready-file", str(_ready_file(workdir, name)), "--"]
            workers.append(start(name=name, loglevel=loglevel, command=entry, die_with_parent=True))
        harness.wait_ready(
            workers, lambda: all(_ready_file(workdir, w.name).exists() for w in workers), timeout=timeout
        )
    except BaseException:
        stop_workers(workers, grace_s=WORKER_STOP_GRACE_S)
        raise
    return workers


def _memory(worker: WorkerProcess) -> tuple[int, int]:
    """``(RSS, PSS)`` in bytes of the worker and its children (prefork pool processes).

    RSS counts pages shared between a prefork parent and its children once per
    process; PSS shares them out, so PSS sums to what the tree really uses.
    """
    try:
        proc = psutil.Process(worker.process.pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for item in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = item.memory_full_info()
            rss += int(info.rss)
            pss += int(getattr(info, "pss", info.rss))
    return rss, pss


def memory_mb(workers: Iterable[WorkerProcess]) -> dict[str, float]:
    """RSS and PSS of all the workers and their children, in MiB."""
    pairs = [_memory(worker) for worker in workers]
    return {"rss_mb": sum(p[0] for p in pairs) / 2**20, "pss_mb": sum(p[1] for p in pairs) / 2**20}


# -- what the benchmarks submit, and the old designs they compare with --------------------------

#: The plates of the sandbox's fleet the benchmarks read (the same seed everywhere).
PLATES = generate_fleet(42, 60).plates()


def trips(index: int, priority: str | None = None) -> dict[str, Any]:
    """One day of trips of one vehicle (the demo's typical call); each makes its own call
    (coalesce: False): the benchmarks count calls."""
    op: dict[str, Any] = {
        "method": "GET",
        "coalesce": False,
        "path": "/Geolocation/Trips",
        "query": {
            "registrationNumber": PLATES[index % len(PLATES)],
            "startDate": "2026-11-26T00:00:00",
            "endDate": "2026-11-27T00:00:00",
        },
    }
    return op | ({"priority": priority} if priority else {})


def extract_old(workdir: Path, commit: str) -> Path:
    """``git archive <commit> optimum_bridge | tar -x`` into ``workdir``; the directory to put on ``PYTHONPATH``."""
    target = workdir / f"old-{commit}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "optimum_bridge"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target
