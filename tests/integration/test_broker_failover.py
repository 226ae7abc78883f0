"""The kombu contract across a Sentinel failover (spec §16): what ``process.kombu`` assumes still holds
on the promoted replica.

A message the bridge builds (assumption 1) is taken through kombu's Sentinel
transport, its unacked record (2) written through the QoS hook (3) with the
bridge's transport options (4); the primary is SIGKILLed, a replica promoted.
On the new primary the record is there and decodes to the same job; a worker
reconnecting as after a failover (5, 6) gets the message back with the
visibility timeout, under the same prefetch limit, and its heartbeat beats.
"""

from __future__ import annotations

import contextlib
import socket
from queue import Empty
from typing import Any

from kombu import Connection, Consumer, Exchange, Queue

from optimum_bridge.keys import EXECUTE_TASK, OPERATIONS_QUEUE, Keys
from optimum_bridge.process import kombu_worker as broker
from optimum_bridge.process.kombu import build_message, job_id_of, unacked_message
from optimum_bridge.process.redis import redis_client
from optimum_bridge.settings import Settings, load_settings
from tests.support import wait_until

PREFIX = "kf:"


def connection(settings: Settings, **options: Any) -> Connection:
    return Connection(broker.broker_url(settings), transport_options={**broker.transport_options(settings), **options})


def consume(conn: Connection, received: list[Any]) -> Consumer:
    queue = Queue(OPERATIONS_QUEUE, Exchange(""), routing_key=OPERATIONS_QUEUE)  # type: ignore[no-untyped-call]
    channel = conn.channel()
    channel.qos.append = broker.retrying_append(channel.qos.append, broker.retried_errors(channel.connection_errors), 5)
    consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, message: received.append(message)])
    consumer.qos(prefetch_count=1)
    return consumer


def restored_and_taken_twice(conn: Connection, taken: list[Any]) -> Any:
    def check() -> bool:
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=1)
        return len(taken) >= 2

    return check


def test_a_message_held_when_the_primary_dies_comes_back_on_the_new_one(sentinel_group):
    group = sentinel_group()
    settings = load_settings(BRIDGE_REDIS_URL=group.url, BRIDGE_KEY_PREFIX=PREFIX, environ={})
    keys = Keys(PREFIX)
    client = redis_client(settings)
    for job in ("job-1", "job-2"):
        client.lpush(keys.queue(OPERATIONS_QUEUE), build_message(EXECUTE_TASK, [job], queue=OPERATIONS_QUEUE))
    before = connection(settings)
    received: list[Any] = []
    with consume(before, received):
        before.drain_events(timeout=5)
    assert [m.headers["task"] for m in received] == [EXECUTE_TASK]
    tag = received[0].delivery_tag
    replicas = [n for n in group.nodes if n is not group.primary()]
    wait_until(lambda: all(group.data_client(n).hexists(keys.unacked, tag) for n in replicas), what="replication")

    old = group.kill_primary()
    new = group.wait_promoted(old.port)
    record = group.data_client(new).hget(keys.unacked, tag)
    assert record is not None
    held = unacked_message(record)
    assert held is not None and job_id_of(held) == "job-1"
    assert group.data_client(new).llen(keys.queue(OPERATIONS_QUEUE)) == 1  # job-2, still queued
    with contextlib.suppress(Exception):
        before.release()  # its primary is gone: what a worker's old connection does

    # A worker reconnecting as after a failover: a short visibility timeout gives the held message back.
    after = connection(settings, visibility_timeout=1)
    again: list[Any] = []
    beats: list[str] = []
    try:
        with consume(after, again) as consumer:
            channel = consumer.channel
            read = channel.handlers["BRPOP"]

            def beat(**options: Any) -> Any:
                try:
                    return read(**options)
                except Empty:
                    beats.append("empty")
                    raise

            channel.handlers["BRPOP"] = beat

            def restored_and_taken() -> bool:
                channel.qos.restore_visible(num=10)
                with contextlib.suppress(socket.timeout):
                    after.drain_events(timeout=1)
                return len(again) >= 1

            wait_until(restored_and_taken, timeout=20, interval=0.2, what="the held message back")
            assert not channel.qos.can_consume()  # prefetch 1, one held: kombu asks for no more
            again[0].ack()
            assert channel.qos.can_consume()
            wait_until(restored_and_taken_twice(after, again), timeout=10, interval=0.1, what="the other message")
            again[1].ack()
            assert sorted(m.decode()[0][0] for m in again) == ["job-1", "job-2"]  # the held one, and the queued one
            beats.clear()
            with contextlib.suppress(socket.timeout):
                after.drain_events(timeout=2.5)
            assert beats  # an idle BRPOP answered: the watchdog's heartbeat on the new primary
    finally:
        after.release()
        client.close()
