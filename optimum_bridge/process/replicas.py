"""Writes acknowledged only once on N replicas (``BRIDGE_REDIS_MIN_REPLICAS``, spec §16): ``WAIT`` after a script.

Every process builds one ``Replicas`` from the settings; ``UNREPLICATED`` is the
one for N = 0 (nothing waited for). A write short of its replicas raises
``NotReplicated``, a retryable ``BridgeUnavailable`` (HTTP 503 at the ingress).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from redis.commands.core import AsyncScript, Script
from redis.exceptions import NoScriptError

from optimum_bridge.errors import BridgeUnavailable

if TYPE_CHECKING:
    from optimum_bridge.settings import Settings

#: How long a write waits for its replicas (``WAIT``) before the caller hears it did not reach them.
WAIT_TIMEOUT_MS = 1000


class NotReplicated(BridgeUnavailable):
    """A write reached fewer replicas than required within ``WAIT_TIMEOUT_MS`` (it may still be on the primary)."""

    def __init__(self, acknowledged: int, required: int, reply: Any = None) -> None:
        super().__init__(
            f"Redis: the write reached {acknowledged} of {required} required replica(s) in "
            f"{WAIT_TIMEOUT_MS} ms (BRIDGE_REDIS_MIN_REPLICAS); retry with the same idempotency key"
        )
        self.acknowledged = acknowledged
        self.required = required
        #: The script's reply on the primary (it ran there: only its replication is in doubt).
        self.reply = reply


class NotOwned(BridgeUnavailable):
    """A guarded write found its key not holding the expected value (a lease lost in a failover)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"Redis: {key} is not ours on this server (a failover lost it)")
        self.key = key


@dataclass(frozen=True)
class Replicas:
    """Runs a script and, with ``required`` >= 1, waits until that many replicas have its write.

    ``WAIT`` counts the writes of *its own connection*, so it goes in one pipeline with the script
    (one round trip, one connection); with ``required`` 0 the script runs alone, as before.
    """

    required: int = 0
    timeout_ms: int = WAIT_TIMEOUT_MS

    @classmethod
    def of(cls, settings: Settings) -> Replicas:
        """``BRIDGE_REDIS_MIN_REPLICAS`` of ``settings``."""
        return cls(settings.redis_min_replicas)

    def run(
        self,
        client: redis.Redis,
        script: Script,
        *,
        keys: list[Any] | None = None,
        args: list[Any],
        guard: tuple[str, str] | None = None,
    ) -> Any:
        """The script's reply, once replicated; ``NotReplicated`` when too few replicas have it in time.

        ``guard`` (a key and the value it must hold, read in the same round trip just before the
        script) raises ``NotOwned`` when the key does not hold it: a write redis-py retried on a
        promoted replica that never saw the writes it follows (a lease taken just before the
        failover) must not be taken for one that did.
        """
        if self.required == 0 and guard is None:
            return script(keys=keys, args=args)
        try:
            replies = self._pipelined(client, script, keys, args, guard)
        except NoScriptError:
            # A promoted replica has no script cache (scripts are not replicated), and a pipeline
            # retried on the new primary after a lost connection does not load them again as a
            # lone script call would: load it and run once more (the script did not run there).
            client.script_load(script.script)
            replies = self._pipelined(client, script, keys, args, guard)
        if guard is not None:
            held = replies.pop(0)
            if held is None or held.decode() != guard[1]:
                raise NotOwned(guard[0])
        if self.required and int(replies[1]) < self.required:
            raise NotReplicated(int(replies[1]), self.required, replies[0])
        return replies[0]

    async def run_async(
        self, client: redis.asyncio.Redis, script: AsyncScript, *, keys: list[Any] | None = None, args: list[Any]
    ) -> Any:
        """``run`` for the asyncio client (``AsyncBridgeClient``): the same pipeline, the same refusals."""
        try:
            reply, acknowledged = await self._pipelined_async(client, script, keys, args)
        except NoScriptError:  # a promoted replica has no script cache (see ``run``)
            await client.script_load(script.script)
            reply, acknowledged = await self._pipelined_async(client, script, keys, args)
        if int(acknowledged) < self.required:
            raise NotReplicated(int(acknowledged), self.required, reply)
        return reply

    async def _pipelined_async(
        self, client: redis.asyncio.Redis, script: AsyncScript, keys: list[Any] | None, args: list[Any]
    ) -> list[Any]:
        async with client.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.wait(self.required, self.timeout_ms)
            replies: list[Any] = await pipe.execute()
        return replies

    def _pipelined(
        self,
        client: redis.Redis,
        script: Script,
        keys: list[Any] | None,
        args: list[Any],
        guard: tuple[str, str] | None,
    ) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        if guard is not None:
            pipe.get(guard[0])
        script(keys=keys, args=args, client=pipe)
        if self.required:
            pipe.wait(self.required, self.timeout_ms)
        replies: list[Any] = pipe.execute()
        return replies


#: No replica waited for (``BRIDGE_REDIS_MIN_REPLICAS=0``): asynchronous replication, as Redis does by default.
UNREPLICATED = Replicas()
