"""Every connection to the bridge's Redis, built from ``BRIDGE_REDIS_URL`` in one place (spec §16).

``BRIDGE_REDIS_URL`` names one Redis (``redis://``, ``rediss://``, ``unix://``)
or a Sentinel-managed one::

    redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]

where the password is the data nodes' and ``BRIDGE_REDIS_SENTINEL_PASSWORD``
the sentinels'. ``redis_client`` builds the client every part of the bridge
uses (workers, ingress, producers, CLI; ``async_redis_client`` its asyncio
twin for ``AsyncBridgeClient``): through Sentinel it asks the sentinels
for the primary on each (re)connect, so a client finds the promoted replica
after a failover; ``connection_retry`` bounds how long a command keeps
retrying meanwhile. ``broker_connection`` is the same Redis as kombu's
Sentinel transport names it (Celery's broker). ``check_eviction_policy`` is
the ``maxmemory-policy`` check every process runs at start. ``Replicas``
holds a script's write until ``BRIDGE_REDIS_MIN_REPLICAS`` replicas have it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
from pydantic import SecretStr
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ReadOnlyError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

if TYPE_CHECKING:
    from optimum_bridge.settings import Settings

log = logging.getLogger(__name__)

SENTINEL_SCHEME = "redis+sentinel://"
DEFAULT_SENTINEL_PORT = 26379
#: Sentinels answer in milliseconds; one that does not is skipped for the next one.
SENTINEL_TIMEOUT_S = 2.0
#: A command retried on a lost connection (or a demoted primary's READONLY) for 5.5 to 11 s,
#: with jitter: longer than a Sentinel failover (down-after-milliseconds + election), so that a
#: write whose answer was lost with the old primary is made again on the new one.
RETRIES = 8
RETRY_BASE_S = 0.1
RETRY_CAP_S = 2.0

#: Connections of one ``AsyncBridgeClient``: a hundred tasks share them instead of opening one each.
ASYNC_MAX_CONNECTIONS = 32
POOL_WAIT_S = 30.0


_SERVICE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_NODE = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+))(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class SentinelTarget:
    """A Sentinel-managed Redis: where its sentinels are, its service name, database and credentials."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: SecretStr | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """A ``redis+sentinel://`` URL, or ``ValueError`` saying what is wrong (never echoing the password)."""
    if not url.startswith(SENTINEL_SCHEME):
        raise ValueError(f"expected {SENTINEL_SCHEME}")
    netloc, _, path = url.removeprefix(SENTINEL_SCHEME).partition("/")
    credentials, at, nodes_text = netloc.rpartition("@")
    if "?" in path or "#" in path:
        raise ValueError("redis+sentinel:// takes no query or fragment")
    sentinels = tuple(_node(node) for node in nodes_text.split(","))
    parts = path.split("/") if path else []
    if not parts or len(parts) > 2 or not _SERVICE.match(parts[0]):
        raise ValueError("expected redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
    if len(parts) == 2 and not (parts[1].isdigit() and int(parts[1]) < 1000):
        raise ValueError("the database after the service name must be a number")
    username, password = _credentials(credentials) if at else (None, None)
    return SentinelTarget(sentinels, parts[0], int(parts[1]) if len(parts) == 2 else 0, username, password)


def _node(text: str) -> tuple[str, int]:
    match = _NODE.match(text.strip())
    port = int(match.group("port") or DEFAULT_SENTINEL_PORT) if match else 0
    if match is None or not 0 < port < 65536:
        raise ValueError("each sentinel must be HOST:PORT (comma-separated)")
    return match.group("v6") or match.group("host"), port


def _credentials(text: str) -> tuple[str | None, SecretStr | None]:
    if ":" not in text:
        raise ValueError("the credentials must be :PASSWORD@ or USER:PASSWORD@")
    user, _, password = text.partition(":")
    return (unquote(user) or None), (SecretStr(unquote(password)) if password else None)


def check_redis_url(url: str) -> None:
    """``ValueError`` with one line unless ``url`` is a Redis URL the bridge can use."""
    if url.startswith(SENTINEL_SCHEME):
        parse_sentinel_url(url)
    elif not re.match(r"^(redis|rediss|unix)://", url):
        raise ValueError("expected a redis://, rediss://, unix:// or redis+sentinel:// URL")


def connection_retry() -> Retry:
    """The retry of every bridge connection: lost connections, timeouts and READONLY, 5.5 to 11 s."""
    backoff = EqualJitterBackoff(cap=RETRY_CAP_S, base=RETRY_BASE_S)
    return Retry(backoff, RETRIES, supported_errors=(redis.ConnectionError, redis.TimeoutError, ReadOnlyError))


def _options() -> dict[str, Any]:
    return {
        "health_check_interval": 30,
        "socket_keepalive": True,
        "socket_connect_timeout": 5,
        "retry": connection_retry(),
        # A demoted primary answers writes with READONLY: reconnect (DNS, or Sentinel) and retry.
        "retry_on_error": [ReadOnlyError, redis.ConnectionError, redis.TimeoutError],  # asyncio pipelines read it
        "retry_on_timeout": True,
    }


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves (their own password, short timeouts)."""
    options: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    if settings.redis_sentinel_password is not None:
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    return options


def redis_client(settings: Settings) -> redis.Redis:
    """The Redis client for the bridge's own keys: the one way every process connects."""
    url = settings.redis_url.get_secret_value()
    if not url.startswith(SENTINEL_SCHEME):
        return redis.Redis.from_url(url, **_options())
    target = parse_sentinel_url(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs(settings))  # type: ignore[no-untyped-call]
    password = target.password.get_secret_value() if target.password else None
    client: _SentinelRedis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service,
        redis_class=_SentinelRedis,
        db=target.db,
        username=target.username,
        password=password,
        connection_class=_SentinelConnection,
        **_options(),
    )
    client.manager = sentinel
    return client


class _SentinelConnection(SentinelManagedConnection):
    """redis-py's connection, once a command lost it, reconnects in ``send_packed_command`` through
    ``connect_check_health``, which retries the address it last had -- the dead primary -- for the
    whole retry budget (about 8 s of refused connects) instead of asking the sentinels again. A
    worker's ``complete`` that lost its answer with a SIGKILLed primary then failed instead of being
    made again on the promoted one: the job stayed running there with its call marked sent, went
    back to its lane when its lease ran out, and was called a second time. Here each attempt asks
    the sentinels, as ``connect`` (a connection taken from the pool) always did."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self._sock:
            return
        if retry_socket_connect:
            self.connect()  # type: ignore[no-untyped-call]  # the sentinels' primary, each attempt
        else:  # connect_to's own single attempt at the address the sentinels gave
            super().connect_check_health(check_health=check_health, retry_socket_connect=False)


class _SentinelRedis(redis.Redis):
    """The primary's client, which closes its connections to the sentinels with its own."""

    manager: Sentinel | None = None

    def close(self) -> None:
        super().close()
        if self.manager is not None:
            self.manager.close()


class _AsyncSentinelRedis(redis.asyncio.Redis):
    """The same for asyncio."""

    manager: redis.asyncio.sentinel.Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.manager is not None:
            await self.manager.aclose()


class _AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """redis-py's asyncio connection sends a command through ``connect_check_health``, which retries
    the address it last had -- the dead primary -- for the whole retry budget instead of asking the
    sentinels again: here it asks them (as ``_SentinelConnection`` does for the blocking client)."""

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        if retry_socket_connect:
            await self.connect()  # type: ignore[no-untyped-call]  # the sentinels' primary, each attempt
        else:  # connect_to's own single attempt at the address the sentinels gave
            await super().connect_check_health(check_health=check_health, retry_socket_connect=False)


def async_redis_client(settings: Settings) -> redis.asyncio.Redis:
    """The same client for asyncio (``AsyncBridgeClient``): at most ``ASYNC_MAX_CONNECTIONS``; a task
    finding them all busy waits for one (up to ``POOL_WAIT_S``) rather than failing (a plain Redis:
    redis-py's Sentinel pool cannot wait, so through Sentinel a busy pool fails the call)."""
    url = settings.redis_url.get_secret_value()
    retry = redis.asyncio.retry.Retry(
        EqualJitterBackoff(cap=RETRY_CAP_S, base=RETRY_BASE_S),
        RETRIES,
        supported_errors=(redis.ConnectionError, redis.TimeoutError, ReadOnlyError),
    )
    options = {**_options(), "retry": retry}
    if not url.startswith(SENTINEL_SCHEME):
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=ASYNC_MAX_CONNECTIONS, timeout=POOL_WAIT_S, **options
        )
        return redis.asyncio.Redis.from_pool(pool)
    target = parse_sentinel_url(url)
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_kwargs(settings)
    )
    password = target.password.get_secret_value() if target.password else None
    client: _AsyncSentinelRedis = sentinel.master_for(
        target.service,
        redis_class=_AsyncSentinelRedis,
        db=target.db,
        username=target.username,
        password=password,
        max_connections=ASYNC_MAX_CONNECTIONS,
        connection_class=_AsyncSentinelConnection,
        **options,
    )
    client.manager = sentinel
    return client


def broker_connection(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and the Sentinel part of its transport options (none for a plain Redis).

    kombu's Sentinel transport takes ``sentinel://`` URLs joined by ``;``, the
    data nodes' password in them, the service as ``master_name`` and the
    sentinels' own options in ``sentinel_kwargs``.
    """
    url = settings.redis_url.get_secret_value()
    if url.startswith("unix://"):
        return "redis+socket://" + url.removeprefix("unix://"), {}
    if not url.startswith(SENTINEL_SCHEME):
        return url, {}
    target = parse_sentinel_url(url)
    auth = ""
    if target.password is not None:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password.get_secret_value(), safe='')}@"
    nodes = [(f"[{host}]" if ":" in host else host, port) for host, port in target.sentinels]
    urls = [f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in nodes]
    return ";".join(urls), {"master_name": target.service, "sentinel_kwargs": sentinel_kwargs(settings)}


def check_eviction_policy(client: redis.Redis) -> str | None:
    """Warn (one line) when Redis may evict keys, or say the policy could not be read; returns the policy."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:  # CONFIG renamed or refused (managed Redis)
        log.warning("redis: could not check maxmemory-policy (CONFIG GET refused); it must be noeviction")
        return None
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # the process goes on and retries its own way
        log.warning("redis: could not check maxmemory-policy (%s); it must be noeviction", type(exc).__name__)
        return None
    text = policy.decode() if isinstance(policy, bytes) else str(policy)
    if text != "noeviction":
        log.warning(
            "redis: maxmemory-policy is %s, not noeviction: under memory pressure Redis would drop queued jobs", text
        )
    return text
