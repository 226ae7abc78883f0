"""Shared process management of the benchmarks: private Redis, sandbox, workers, environments.

Every benchmark runs against things it starts itself and stops afterwards (also
on Ctrl-C): a private ``redis-server`` on a free port (no persistence), the
sandbox in its own process (``optimum-bridge sandbox``) and real Celery worker
processes (started through ``bench.worker_entry``). Children die with the bench
(``PR_SET_PDEATHSIG``) and run in their own session, so Ctrl-C reaches only the
bench, which then stops them in order. Nothing talks to anything but 127.0.0.1.
The callback receiver is in ``receiver``, results and tables in ``report``.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import psutil  # type: ignore[import-untyped]
import redis

from optimum_bridge.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"bench-callback-secret-0123456789").decode()
LOOPBACK = "127.0.0.1"
WorkerKind = Literal["bridge", "plain", "instrumented"]


# -- small helpers ---------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the bench dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(args: Sequence[str], *, env: Mapping[str, str] | None, cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a child in its own session, logging to ``log_path``, dying with the bench."""
    with log_path.open("wb") as out:
        return subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509  (no threads touch the child before exec)
        )


def stop_process(process: subprocess.Popen[bytes], *, grace_s: float = 15.0, signalled: bool = False) -> None:
    """SIGTERM (unless already ``signalled``), wait up to ``grace_s``, then SIGKILL."""
    if process.poll() is not None:
        return
    if not signalled:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


# -- private redis ---------------------------------------------------------------------


@dataclass
class RedisProc:
    """A private ``redis-server`` on a free port, without persistence."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port)

    def used_memory(self) -> int:
        """``INFO memory`` ``used_memory`` in bytes."""
        return int(self.client().info("memory")["used_memory"])

    def flush(self) -> None:
        """Forget everything (between runs; only this private server is touched)."""
        self.client().flushall()

    def version(self) -> str:
        return str(self.client().info("server")["redis_version"])

    def stop(self) -> None:
        stop_process(self.process, grace_s=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(workdir: Path) -> RedisProc:
    """Start a private redis-server (``--save "" --appendonly no``) and wait until it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="bench-redis-", dir=workdir))
    args = [binary, "--port", str(port), "--bind", LOOPBACK, "--dir", str(data), "--save", "", "--appendonly", "no"]
    server = RedisProc(port, spawn(args, env=None, cwd=data, log_path=data / "redis.log"), data)

    def answers() -> bool:
        try:
            return bool(server.client().ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, timeout=10, what="redis-server to answer")
    return server


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
    """This environment without bridge settings, plus ``settings`` and the project on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_", "PLAIN_"))}
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def bridge_settings(redis_url: str, sandbox: SandboxProc, **overrides: str) -> dict[str, str]:
    """The bridge's variables for a run against ``sandbox`` (overrides win)."""
    values = {
        "OPTIMUM_ENVIRONMENT": "sandbox",
        "OPTIMUM_API_URL": sandbox.url,
        "OPTIMUM_TOKEN_URL": sandbox.token_url,
        "OPTIMUM_RATE_LIMIT": "30/m",
        "OPTIMUM_TIMEOUT_S": "10",
        "BRIDGE_REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": "bench:",
        "BRIDGE_CALLBACK_SECRET": CALLBACK_SECRET,
        "BRIDGE_CALLBACK_ALLOW_PRIVATE": "true",
        "BRIDGE_LOG_LEVEL": "WARNING",
    }
    values.update(overrides)
    return values


def settings_from(values: Mapping[str, str]) -> Settings:
    """``Settings`` exactly as a process with these variables builds them (no ``.env``)."""
    fields: dict[str, Any] = dict(values)
    return Settings(_env_file=None, **fields)


# -- worker processes ------------------------------------------------------------------------


@dataclass
class Worker:
    """A real Celery worker process (``bench.worker_entry``)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_path: Path

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"worker {self.name} exited ({self.process.returncode}):\n{tail(self.log_path)}")
        return self.ready_path.exists()

    def memory(self) -> tuple[int, int]:
        """``(RSS, PSS)`` in bytes of the worker and its children (prefork pool processes).

        RSS counts pages shared between a prefork parent and its children once per
        process; PSS shares them out, so PSS sums to what the tree really uses.
        """
        try:
            proc = psutil.Process(self.process.pid)
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

    def stop(self, *, signalled: bool = False) -> None:
        stop_process(self.process, grace_s=20, signalled=signalled)


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
) -> list[Worker]:
    """Start ``count`` worker processes and wait until every one consumes."""
    run = uuid.uuid4().hex[:6]
    workers = []
    for index in range(count):
        name = f"{kind}{index + 1}-{run}"
        ready = workdir / f"{name}.ready"
        args = [sys.executable, "-m", "bench.worker_entry", "--kind", kind, "--ready-file", str(ready), "--"]
        args += ["--pool", pool, "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", loglevel]
        args += ["--without-mingle", "--without-gossip"]
        log_path = workdir / f"{name}.log"
        process = spawn(args, env=child_env(values), cwd=workdir, log_path=log_path)
        workers.append(Worker(name, process, log_path, ready))
    try:
        wait_until(lambda: all(w.ready() for w in workers), timeout=timeout, interval=0.1, what=f"{count} workers")
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Iterable[Worker]) -> None:
    """SIGTERM them all at once, then wait for each (SIGKILL after a grace period)."""
    listed = list(workers)
    for worker in listed:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in listed:
        worker.stop(signalled=True)


def memory_mb(workers: Iterable[Worker]) -> dict[str, float]:
    """RSS and PSS of all the workers and their children, in MiB."""
    pairs = [worker.memory() for worker in workers]
    return {"rss_mb": sum(p[0] for p in pairs) / 2**20, "pss_mb": sum(p[1] for p in pairs) / 2**20}
