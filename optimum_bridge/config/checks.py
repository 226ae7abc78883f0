"""Checks a process makes at start, before it takes any work: each fails with one line naming the setting."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from optimum_bridge.errors import ConfigError
from optimum_bridge.schedules.model import file_schedules
from optimum_bridge.settings import Settings


def require_simulator(settings: Settings) -> None:
    """With ``OPTIMUM_ENVIRONMENT=sandbox``, a ``ConfigError`` unless the simulator's host name resolves.

    A compose stack started without its sandbox profile would otherwise retry
    every call for hours against a name that does not exist, its workers alive
    and its ``/readyz`` green. This only looks the name up; it sends nothing.
    """
    if settings.environment != "sandbox":
        return
    host = urlsplit(settings.token_url).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        variable = "OPTIMUM_TOKEN_URL" if settings.token_url_override else "OPTIMUM_SANDBOX_URL"
        raise ConfigError(
            f"{variable}: the simulator's host {host!r} does not resolve; with OPTIMUM_ENVIRONMENT=sandbox it must "
            "run (docker compose: --profile sandbox, or COMPOSE_PROFILES=sandbox in .env)"
        ) from None


def require_schedules(settings: Settings) -> None:
    """A ``ConfigError`` naming the schedule and field if a ``[schedules.NAME]`` of the accounts file is wrong
    (every template rendered for a tick now): refused at start, never at 2 a.m."""
    file_schedules(settings.accounts)


def require_secrets_key(settings: Settings) -> None:
    """A ``ConfigError`` if accounts stored in Redis (spec §12a) cannot be decrypted with ``BRIDGE_SECRETS_KEY``
    (a wrong key, or none): a worker that cannot serve them stops at start. Redis away: checked later."""
    import redis  # noqa: PLC0415 - a worker's start only

    from optimum_bridge.accounts.cipher import SecretsCipher  # noqa: PLC0415 - a worker's start only
    from optimum_bridge.accounts.registry import AccountRegistry  # noqa: PLC0415
    from optimum_bridge.accounts.store import AccountStore  # noqa: PLC0415
    from optimum_bridge.keys import Keys  # noqa: PLC0415
    from optimum_bridge.process.redis import SENTINEL_SCHEME, redis_client  # noqa: PLC0415

    url = settings.redis_url.get_secret_value()
    # One attempt, not the retry budget of the bridge's client: a Redis still starting delays no worker.
    if url.startswith(SENTINEL_SCHEME):
        client = redis_client(settings)
    else:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    try:
        cipher = SecretsCipher(settings.secrets_key)
        store = AccountStore(
            client, Keys(settings.key_prefix), file=settings.accounts, cipher=cipher, sandbox_url=settings.sandbox_url
        )
        AccountRegistry(store).load(strict=True)
    except redis.RedisError:
        return
    finally:
        client.close()
