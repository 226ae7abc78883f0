"""The due set: work waiting for its time -- retries, deferred jobs, callback redeliveries.

Entries are ``<queue key>\n<Celery message>`` scored by their due time on the
Redis clock; ``DueSet.pump`` moves what is due to its queue (any number of
workers may pump at once). Celery ETA messages are not used: kombu
re-delivers unacknowledged ETA tasks after the visibility timeout, which would
duplicate any retry scheduled further ahead than ``BRIDGE_REDELIVERY_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import Any

import redis

from optimum_bridge.keys import Keys
from optimum_bridge.lua import scripts
from optimum_bridge.process.kombu import build_message


def due_member(keys: Keys, task: str, args: list[Any], *, queue: str) -> str:
    """A due-set entry: the queue's Redis key, a newline, the message."""
    return f"{keys.queue(queue)}\n{build_message(task, args, queue=queue)}"


class DueSet:
    """Moves due messages to their queues."""

    def __init__(self, client: redis.Redis, keys: Keys, *, batch: int = 500) -> None:
        self._keys = keys
        self._batch = batch
        self._pump = scripts.register(client, "due_pump")

    def pump(self) -> int:
        """Enqueue everything due now; returns how many messages moved."""
        moved = 0
        while True:
            count = int(self._pump(keys=[self._keys.due], args=[self._batch]))
            moved += count
            if count < self._batch:
                return moved
