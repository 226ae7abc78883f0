"""The Redis client of every process: workers, the ingress, producers and the CLI build it here
(and ``AsyncBridgeClient`` its asyncio twin)."""

from __future__ import annotations

import redis
import redis.asyncio

from optimum_bridge.settings import Settings


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
    """The same client for asyncio (``AsyncBridgeClient``)."""
    return redis.asyncio.Redis.from_url(
        settings.redis_url.get_secret_value(),
        health_check_interval=30,
        socket_keepalive=True,
        socket_connect_timeout=5,
        retry_on_timeout=True,
    )
