"""A Sentinel-managed Redis (spec §16): clients and kombu find the promoted replica; the eviction check.

A primary, two replicas and three sentinels on loopback (``devstack.sentinel``):
the primary is SIGKILLed under a client and a kombu connection, which carry on
against the promoted replica.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from kombu import Connection, Consumer, Exchange, Producer, Queue

from optimum_bridge import AsyncBridgeClient, BridgeUnavailable
from optimum_bridge.process import kombu_worker as broker
from optimum_bridge.process.redis import check_eviction_policy, redis_client
from optimum_bridge.settings import Settings, load_settings
from tests.support import bridge_env, settings_from


def settings(url: str, **env: str) -> Settings:
    return load_settings(BRIDGE_REDIS_URL=url, environ={}, **env)


def test_clients_follow_a_failover_through_the_sentinels(sentinel_group, caplog):
    group = sentinel_group(password="data-pw", sentinel_password="sentinel-pw")
    s = settings(group.url, BRIDGE_REDIS_SENTINEL_PASSWORD="sentinel-pw")
    client = redis_client(s)
    connection = Connection(broker.broker_url(s), transport_options=broker.transport_options(s))
    queue = Queue("q", Exchange("q"), routing_key="q")
    try:
        client.set("k", "before")
        old = group.kill_primary()
        # The same client, on its next command, asks the sentinels again and writes to the new primary.
        assert client.set("k", "after")
        new = group.wait_promoted(old.port)
        assert group.data_client(new).get("k") == b"after"
        Producer(connection.channel()).publish({"n": 1}, exchange=queue.exchange, routing_key="q", declare=[queue])
        received = []
        with Consumer(
            connection.channel(), queues=[queue], callbacks=[lambda body, m: (received.append(body), m.ack())]
        ):
            connection.drain_events(timeout=10)
        assert received == [{"n": 1}]
        assert group.data_client(new).llen(f"{s.key_prefix}q") == 0  # through the prefix, on the new primary
        with caplog.at_level(logging.WARNING):
            assert check_eviction_policy(client) == "noeviction"
        assert not caplog.records
    finally:
        connection.release()
        client.close()


def test_a_command_in_flight_when_the_primary_dies_is_made_again_on_the_promoted_one(sentinel_group):
    """A worker's ``complete`` whose answer the SIGKILL took must reach the promoted replica: retried
    at the dead primary's address alone, it failed and the job ran again once its lease ran out."""
    group = sentinel_group()
    client = redis_client(settings(group.url))
    outcome: list[object] = []

    def blocked() -> None:  # in flight at the kill: its connection is lost mid-command, not between two
        try:
            outcome.append(client.blpop(["nothing-comes"], timeout=4))
        except Exception as exc:
            outcome.append(exc)

    try:
        client.set("k", "before")
        thread = threading.Thread(target=blocked)
        thread.start()
        time.sleep(0.5)
        old = group.kill_primary()
        thread.join(30)
        new = group.wait_promoted(old.port)
        assert outcome == [None]  # BLPOP timed out on the new primary, no ConnectionError
        assert client.connection_pool.get_master_address()[1] == new.port
    finally:
        client.close()


def test_an_evicting_redis_gets_one_warning(private_redis, caplog):
    server = private_redis("--maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING, logger="optimum_bridge.process.redis"):
        assert check_eviction_policy(server.client()) == "allkeys-lru"
    assert [r.getMessage() for r in caplog.records] == [
        "redis: maxmemory-policy is allkeys-lru, not noeviction: under memory pressure Redis would drop queued jobs"
    ]


def test_a_redis_refusing_config_gets_one_line_saying_so(private_redis, caplog):
    server = private_redis("--rename-command", "CONFIG", "")
    with caplog.at_level(logging.WARNING, logger="optimum_bridge.process.redis"):
        assert check_eviction_policy(server.client()) is None
    assert [r.getMessage() for r in caplog.records] == [
        "redis: could not check maxmemory-policy (CONFIG GET refused); it must be noeviction"
    ]


def test_the_asyncio_client_follows_a_failover_too(sentinel_group, sandbox):
    group = sentinel_group()
    env = bridge_env(group.url, "as:", sandbox(quota=None), BRIDGE_REDIS_MIN_REPLICAS="1")
    operation = {"method": "GET", "path": "/Vehicles/AB-123-CD"}

    async def acknowledged(client: AsyncBridgeClient, key: str) -> str:
        """A producer's part (spec §16): until a replica has it, resubmit with the same idempotency key.
        Right after a promotion the other replica may still be syncing with the new primary."""
        until = time.monotonic() + 60
        while True:
            try:
                return await client.submit({**operation, "idempotency_key": key})
            except BridgeUnavailable:
                if time.monotonic() > until:
                    raise
                await asyncio.sleep(0.2)  # the producer's backoff, not a wait for an event

    async def submit_across_a_failover() -> tuple[str, str]:
        async with AsyncBridgeClient(settings_from(env)) as client:
            before = await acknowledged(client, "before")
            old = group.kill_primary()
            after = await acknowledged(client, "after")  # connections retried until the sentinels name the new one
            assert group.wait_promoted(old.port).port != old.port
            return before, after

    before, after = asyncio.run(submit_across_a_failover())
    new = group.data_client(group.primary())
    assert new.exists(f"as:job:{before}") and new.exists(f"as:job:{after}")
