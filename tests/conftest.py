"""Shared fixtures: a private Redis, the sandbox, real worker processes, a callback receiver.

Every test gets its own key prefix on one private ``redis-server`` started for
the run, so nothing here touches a database it did not create.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from optimum_bridge.runtime import Runtime
from optimum_bridge.sandbox import SandboxConfig, SandboxServer
from optimum_bridge.settings import Settings

pytest_plugins = ["tests.tiers"]  # marks every test redis / processes / fast (tests/tiers.py)

ROOT = Path(__file__).resolve().parent.parent
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"test-callback-secret-0123456789").decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy (an event wait, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``optimum-bridge ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "optimum_bridge.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class RedisServer:
    """A private redis-server process on a free port."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # up, and asking for a password
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        """Stop the server (SIGTERM: a clean shutdown) and start it again on the same port and directory."""
        self.stop()
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self.answers, timeout=10, what="redis-server to answer again")


def start_redis(*extra: str) -> RedisServer:
    """Start a private redis-server (extra args e.g. ``--appendonly yes``)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (.ci/run installs it)")
    workdir = Path(tempfile.mkdtemp(prefix="obr-redis-"))
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", *extra]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, process, workdir, args)
    wait_until(server.answers, timeout=10, what="redis-server to answer")
    return server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis("--appendonly", "no")
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[Callable[..., RedisServer]]:
    """Factory: a redis-server of the test's own (AOF, passwords...), stopped afterwards."""
    servers: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = start_redis(*extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def prefix(redis_server: RedisServer) -> Iterator[str]:
    """A key prefix owned by this test; its keys are deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}:"
    yield name
    client = redis_server.client()
    for key in client.scan_iter(match=f"{name}*", count=1000):
        client.delete(key)


@pytest.fixture
def sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Factory: ``sandbox(quota="10/s", ...)`` starts a simulator on a free port."""
    servers: list[SandboxServer] = []

    def start(**knobs: Any) -> SandboxServer:
        server = SandboxServer(SandboxConfig(**knobs), host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def bridge_env(redis_url: str, prefix: str, sandbox: SandboxServer, **overrides: str) -> dict[str, str]:
    """The environment of a bridge process talking to ``sandbox``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_"))}
    env.update(
        OPTIMUM_ENVIRONMENT="sandbox",
        OPTIMUM_API_URL=sandbox.url,
        OPTIMUM_TOKEN_URL=sandbox.token_url,
        OPTIMUM_RATE_LIMIT="30/m",
        OPTIMUM_TIMEOUT_S="10",
        BRIDGE_REDIS_URL=redis_url,
        BRIDGE_KEY_PREFIX=prefix,
        BRIDGE_CALLBACK_SECRET=CALLBACK_SECRET,
        BRIDGE_CALLBACK_ALLOW_PRIVATE="true",
        BRIDGE_RETRY_BASE_S="0.2",
        BRIDGE_CALLBACK_SCHEDULE_S="0.2,0.2,0.2",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def settings_from(env: dict[str, str]) -> Settings:
    """``Settings`` exactly as a process with ``env`` would build them."""
    fields = {k: v for k, v in env.items() if k.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_"))}
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


@pytest.fixture
def runtime() -> Iterator[Callable[[Settings], Runtime]]:
    """Factory: an in-process ``Runtime``, closed at teardown even when the test fails."""
    opened: list[Runtime] = []

    def build(settings: Settings) -> Runtime:
        opened.append(Runtime(settings))
        return opened[-1]

    yield build
    for rt in opened:
        rt.close()


@dataclass
class Worker:
    """A real Celery worker process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    name: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Factory: ``workers(env, concurrency=4)`` starts a worker and waits until it consumes."""
    started: list[Worker] = []

    def start(env: dict[str, str], *, concurrency: int = 4, pool: str = "threads", wait: bool = True) -> Worker:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        log_path = tmp_path / f"{name}.log"
        args = [
            sys.executable,
            "-m",
            "optimum_bridge.cli",
            "worker",
            "--pool",
            pool,
            "-c",
            str(concurrency),
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
        ]
        with log_path.open("wb") as out:
            process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        worker = Worker(process, log_path, name)
        started.append(worker)
        if wait:
            wait_until(lambda: "ready." in worker.log() or process.poll() is not None, timeout=60, what=f"{name} ready")
            if process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{worker.log()}")
        return worker

    yield start
    for worker in started:
        worker.stop()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP server recording callbacks; ``statuses`` scripts its answers."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            rec = holder["r"]
            with rec.lock:
                rec.attempts += 1
                status = rec.statuses.pop(0) if rec.statuses else 204
                if 200 <= status < 300:
                    rec.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["r"]
    server.shutdown()
    server.server_close()
