"""The Redis client of every process: workers, the ingress, producers and the CLI build it here
(and ``AsyncBridgeClient`` its asyncio twin)."""

from __future__ import annotations

import redis
import redis.asyncio

from optimum_bridge.settings import Settings

#: Connections of one ``AsyncBridgeClient``: a hundred tasks share them instead of opening one each.
ASYNC_MAX_CONNECTIONS = 32
POOL_WAIT_S = 30.0


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client for the bridge's own keys (health-checked, retried on blips)."""
    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        health_check_interval=30,
        socket_keepalive=True,
        socket_connect_timeout=5,
        retry_on_timeout=True,
    )


def async_redis_client(settings: Settings) -> redis.asyncio.Redis:
    """The same client for asyncio (``AsyncBridgeClient``): at most ``ASYNC_MAX_CONNECTIONS``, and a task
    finding them all busy waits for one (up to ``POOL_WAIT_S``) rather than failing."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        settings.redis_url.get_secret_value(),
        max_connections=ASYNC_MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        health_check_interval=30,
        socket_keepalive=True,
        socket_connect_timeout=5,
        retry_on_timeout=True,
    )
    return redis.asyncio.Redis.from_pool(pool)
