"""Celery messages built without a broker round trip, and the due-retry pump.

Submitting a batch writes job records and queue messages in one Lua call, so
the messages are built here in exactly the form kombu's Redis transport
pushes (Celery protocol 2, JSON, base64 body). Delayed work -- retries,
deferred jobs, callback redeliveries -- waits in a Redis sorted set scored by
its due time on the Redis clock; ``DuePump`` moves what is due to its queue.
Celery ETA messages are not used: kombu re-delivers unacknowledged ETA tasks
after the visibility timeout, which would duplicate any retry scheduled
further ahead than ``BRIDGE_REDELIVERY_TIMEOUT_S``.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery

from .keys import Keys

log = logging.getLogger(__name__)

EXECUTE_TASK = "bridge.execute"
DELIVER_TASK = "bridge.deliver_callback"

_builder = Celery("optimum_bridge.messages", set_as_current=False)

_PUMP = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, item in ipairs(items) do
  local sep = string.find(item, '\\n', 1, true)
  redis.call('RPUSH', string.sub(item, 1, sep - 1), string.sub(item, sep + 1))
  redis.call('ZREM', KEYS[1], item)
end
return #items
"""


@functools.cache
def _static_parts(task: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Celery's own headers, properties and embed for ``task`` (built once; per-message fields replaced)."""
    headers, properties, body, _ = _builder.amqp.as_task_v2("0", task, args=[], kwargs={})
    return headers, properties, body[2]


def build_message(task: str, args: list[Any], *, queue: str) -> str:
    """A Celery task message as kombu's Redis transport stores it in a queue list."""
    task_id = str(uuid.uuid4())
    static_headers, static_properties, embed = _static_parts(task)
    headers = {**static_headers, "id": task_id, "root_id": task_id, "argsrepr": repr(args)}
    payload = json.dumps([args, {}, embed], separators=(",", ":")).encode()
    message = {
        "body": base64.b64encode(payload).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **static_properties,
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(message, separators=(",", ":"))


def due_member(keys: Keys, task: str, args: list[Any], *, queue: str) -> str:
    """A due-set entry: the queue's Redis key, a newline, the message."""
    return f"{keys.queue(queue)}\n{build_message(task, args, queue=queue)}"


class DuePump:
    """Moves due messages to their queues; safe to run in every worker at once."""

    def __init__(self, client: redis.Redis, keys: Keys, *, batch: int = 500) -> None:
        self._keys = keys
        self._batch = batch
        self._pump = client.register_script(_PUMP)
        self._client = client

    def run_once(self) -> int:
        """Enqueue everything due now; returns how many messages moved."""
        moved = 0
        while True:
            count = int(self._pump(keys=[self._keys.due], args=[self._batch]))
            moved += count
            if count < self._batch:
                return moved

    def beat(self, name: str) -> None:
        """Record that worker ``name`` is alive (Redis clock); forget workers silent for a day."""
        now = float(self._client.time()[0])
        with self._client.pipeline(transaction=False) as pipe:
            pipe.zadd(self._keys.workers, {name: now})
            pipe.zremrangebyscore(self._keys.workers, "-inf", now - 86400)
            pipe.execute()

    def run_forever(
        self,
        stop: threading.Event,
        *,
        interval_s: float = 0.25,
        heartbeat: str | None = None,
        every_2s: Callable[[], object] | None = None,
    ) -> None:
        """Pump until ``stop`` is set; survives Redis outages (logged, retried)."""
        ticks = 0
        while not stop.is_set():
            try:
                self.run_once()
                if heartbeat:
                    self.beat(heartbeat)
                ticks += 1
                if every_2s is not None and ticks % max(1, round(2 / interval_s)) == 0:
                    every_2s()
            except redis.RedisError as exc:
                log.warning("due pump: Redis unavailable (%s); retrying", type(exc).__name__)
                stop.wait(1.0)
            stop.wait(interval_s)
