"""The kombu contract: what ``optimum_bridge.process.kombu`` assumes is what the pinned kombu and Celery do.

Each test runs kombu or Celery itself against a private Redis and checks one
assumption listed in ``process/kombu.py``'s docstring. An upgrade that changes the
message format, the unacked record or the QoS hook fails here first.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from queue import Empty
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Consumer, Exchange, Queue

from optimum_bridge.keys import CALLBACKS_QUEUE, DELIVER_TASK, EXECUTE_TASK, OPERATIONS_QUEUE, Keys
from optimum_bridge.process import kombu_worker as broker
from optimum_bridge.process.kombu import build_message, job_id_of, message_args, unacked_message
from optimum_bridge.settings import Settings

#: Values that differ from one message to the next, whoever builds it.
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "origin"}


def keys_of(value: Any) -> Any:
    """The nested key structure of a JSON object (values dropped)."""
    return {k: keys_of(v) for k, v in value.items()} if isinstance(value, dict) else None


def celery_sends(redis_server: Any, prefix: str, queue_name: str, task: str, args: list[Any]) -> dict[str, Any]:
    """The message Celery itself writes for ``task(*args)`` on ``queue_name`` (popped back from Redis)."""
    app = Celery("contract", broker=redis_server.url, set_as_current=False)
    app.conf.update(broker_transport_options={"global_keyprefix": prefix}, task_serializer="json")
    queue = Queue(queue_name, Exchange(""), routing_key=queue_name)  # type: ignore[no-untyped-call]
    try:
        app.send_task(task, args=args, queue=queue)
    finally:
        app.close()
    return dict(json.loads(redis_server.client().lpop(Keys(prefix).queue(queue_name))))


def assert_same_message(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """A message built in Lua is Celery's own, but for what differs from one message to the next."""
    assert keys_of(ours) == keys_of(theirs)
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(base64.b64decode(theirs["body"]))
    for part in ("headers", "properties"):
        differ = {k for k in theirs[part] if theirs[part][k] != ours[part][k]} - PER_MESSAGE
        assert differ <= {"ignore_result"}, f"{part} differ in {differ}"
    assert ours["headers"]["argsrepr"] == theirs["headers"]["argsrepr"]


def test_build_message_writes_what_kombu_writes(redis_server, prefix):
    app = Celery("contract", broker=redis_server.url, set_as_current=False)
    app.conf.update(broker_transport_options={"global_keyprefix": prefix}, task_serializer="json")
    queue = Queue(OPERATIONS_QUEUE, Exchange(""), routing_key=OPERATIONS_QUEUE)  # type: ignore[no-untyped-call]
    try:
        app.send_task(EXECUTE_TASK, args=["job-1"], queue=queue)
    finally:
        app.close()
    client = redis_server.client()
    theirs = json.loads(client.lpop(Keys(prefix).queue(OPERATIONS_QUEUE)))
    ours = json.loads(build_message(EXECUTE_TASK, ["job-1"], queue=OPERATIONS_QUEUE))

    assert keys_of(ours) == keys_of(theirs)  # the same fields, at every level
    assert json.loads(base64.b64decode(ours["body"])) == json.loads(base64.b64decode(theirs["body"]))
    for part in ("headers", "properties"):
        differ = {k for k in theirs[part] if theirs[part][k] != ours[part][k]} - PER_MESSAGE
        assert differ <= {"ignore_result"}, f"{part} differ in {differ}"  # ours says False, send_task None
    assert {k: ours[k] for k in ("content-type", "content-encoding")} == {
        k: theirs[k] for k in ("content-type", "content-encoding")
    }
    assert job_id_of(theirs) == "job-1" and message_args(theirs, task=EXECUTE_TASK) == ["job-1"]


def consume_one(redis_url: str, prefix: str, settings: Settings) -> tuple[Any, Any]:
    """Consume one message from our queue through kombu's Redis channel, unacknowledged; (message, channel)."""
    connection = Connection(redis_url, transport_options=broker.transport_options(settings))
    channel = connection.channel()
    received: list[Any] = []
    queue = Queue(OPERATIONS_QUEUE, Exchange(""), routing_key=OPERATIONS_QUEUE)  # type: ignore[no-untyped-call]
    consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, message: received.append(message)])
    consumer.qos(prefetch_count=1)
    with consumer:
        connection.drain_events(timeout=5)
    return received[0], (connection, channel)


@pytest.fixture
def contract_settings(redis_server, prefix) -> Settings:
    return Settings(_env_file=None, BRIDGE_REDIS_URL=redis_server.url, BRIDGE_KEY_PREFIX=prefix)  # type: ignore[call-arg]


def test_a_held_message_is_in_the_unacked_hash_as_the_audit_reads_it(redis_server, prefix, contract_settings):
    client = redis_server.client()
    keys = Keys(prefix)
    client.lpush(keys.queue(OPERATIONS_QUEUE), build_message(EXECUTE_TASK, ["job-2"], queue=OPERATIONS_QUEUE))
    message, (connection, _) = consume_one(redis_server.url, prefix, contract_settings)
    try:
        assert message.headers["task"] == EXECUTE_TASK and message.decode()[0] == ["job-2"]
        records = list(client.hvals(keys.unacked))
        assert len(records) == 1
        held = unacked_message(records[0])
        assert held is not None and job_id_of(held) == "job-2"
        assert json.loads(records[0])[1:] == ["", OPERATIONS_QUEUE]  # [message, exchange, routing key]
        message.ack()
        assert client.hlen(keys.unacked) == 0
    finally:
        connection.release()


def test_the_qos_hook_wraps_the_method_kombu_records_with(redis_server, prefix, contract_settings):
    """``RecordUnacked`` replaces ``channel.qos.append``: kombu must still record through it."""
    client = redis_server.client()
    keys = Keys(prefix)
    connection = Connection(redis_server.url, transport_options=broker.transport_options(contract_settings))
    channel = connection.channel()
    recorded: list[str] = []
    original = channel.qos.append
    assert callable(original) and isinstance(channel.connection_errors, tuple)

    def spy(message: Any, delivery_tag: str) -> None:
        recorded.append(delivery_tag)
        original(message, delivery_tag)

    channel.qos.append = broker.retrying_append(spy, broker.retried_errors(channel.connection_errors), 1.0)
    client.lpush(keys.queue(OPERATIONS_QUEUE), build_message(EXECUTE_TASK, ["job-3"], queue=OPERATIONS_QUEUE))
    received: list[Any] = []
    queue = Queue(OPERATIONS_QUEUE, Exchange(""), routing_key=OPERATIONS_QUEUE)  # type: ignore[no-untyped-call]
    consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, message: received.append(message)])
    consumer.qos(prefetch_count=1)
    try:
        with consumer:
            connection.drain_events(timeout=5)
        assert len(received) == 1 and recorded == [received[0].delivery_tag]
        assert client.hexists(keys.unacked, recorded[0])
        received[0].ack()
    finally:
        connection.release()


def test_transport_options_are_ones_kombu_knows():
    from kombu.transport.redis import Channel

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    known = set(Channel.from_transport_options)
    assert set(broker.transport_options(settings)) <= known


def test_the_messages_dispatch_builds_in_lua_are_what_kombu_writes(redis_server, prefix):
    """``lua/_message.lua`` fills ``process.kombu.message_template``: the result must be Celery's own message."""
    from optimum_bridge import BridgeClient
    from optimum_bridge.process.runtime import Runtime

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, BRIDGE_REDIS_URL=redis_server.url, BRIDGE_KEY_PREFIX=prefix, OPTIMUM_ENVIRONMENT="sandbox"
    )
    rt = Runtime(settings)
    try:
        job_id = BridgeClient(settings, client=rt.redis).submit({"method": "GET", "path": "/Vehicles"})
        assert rt.dispatcher.run("default").given == 1
        ours = json.loads(rt.redis.lpop(Keys(prefix).queue(OPERATIONS_QUEUE)))
    finally:
        rt.close()
    assert_same_message(
        ours, celery_sends(redis_server, prefix, OPERATIONS_QUEUE, EXECUTE_TASK, [job_id, 1, "default"])
    )


def test_the_callback_messages_built_in_lua_are_what_kombu_writes(redis_server, prefix):
    """A follower's callback (spec §13) is queued by ``lua/complete.lua``: it must be Celery's own message."""
    from optimum_bridge import BridgeClient
    from optimum_bridge.process.runtime import Runtime
    from optimum_bridge.schemas import ApiResponse

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        BRIDGE_REDIS_URL=redis_server.url,
        BRIDGE_KEY_PREFIX=prefix,
        OPTIMUM_ENVIRONMENT="sandbox",
        BRIDGE_CALLBACK_ALLOW_PRIVATE="true",
    )
    rt = Runtime(settings)
    read = {"method": "GET", "path": "/Vehicles", "callback": {"url": "http://127.0.0.1:9/hook"}}
    try:
        leader, follower = BridgeClient(settings, client=rt.redis).submit_many([read, read])
        answer = ApiResponse(status_code=200, body=[])
        assert rt.jobs.finish(leader, "w", succeeded=True, response=answer, error=None, callback=True).finished
        ours = json.loads(rt.redis.lpop(Keys(prefix).queue(CALLBACKS_QUEUE)))  # the last queued: the follower's
    finally:
        rt.close()
    assert_same_message(ours, celery_sends(redis_server, prefix, CALLBACKS_QUEUE, DELIVER_TASK, [follower, 1]))


def test_every_brpop_answer_goes_through_the_handler_the_watchdog_wraps(redis_server, prefix, contract_settings):
    """``WatchConsumer`` beats in ``channel.handlers["BRPOP"]``: kombu must read each answer through it,
    ``queue.Empty`` when its one-second timeout passed, and say through ``qos.can_consume`` when it asks."""
    connection = Connection(redis_server.url, transport_options=broker.transport_options(contract_settings))
    channel = connection.channel()
    assert channel.handlers["BRPOP"] == channel._brpop_read and channel.brpop_timeout == 1
    answers: list[str] = []
    read = channel.handlers["BRPOP"]

    def spy(**options: Any) -> Any:
        try:
            result = read(**options)
        except Empty:
            answers.append("empty")
            raise
        answers.append("message")
        return result

    channel.handlers["BRPOP"] = spy
    queue = Queue(OPERATIONS_QUEUE, Exchange(""), routing_key=OPERATIONS_QUEUE)  # type: ignore[no-untyped-call]
    consumer = Consumer(channel, queues=[queue], callbacks=[lambda body, message: message.ack()])
    consumer.qos(prefetch_count=1)
    try:
        with consumer:
            assert channel.qos.can_consume()
            with contextlib.suppress(socket.timeout):
                connection.drain_events(timeout=2.5)
            assert answers and set(answers) == {"empty"}
    finally:
        connection.release()
