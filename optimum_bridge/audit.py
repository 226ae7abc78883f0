"""Find jobs left waiting with no message after a broker connection was lost, and queue them again.

Kombu consumes with ``BRPOP``: Redis removes the message when it answers. If
the connection breaks before the worker has read that answer (Redis
restarting, a dropped connection: the worker tears the socket down with the
reply still unread), the message is gone, and its job stays ``queued`` or
``retrying`` for ever. ``broker.RecordUnacked`` covers the moment after the
reply is read; this covers the reply itself.

Whenever a worker's consumer starts or reconnects it asks for an audit
(``request``): a start may follow a worker that died holding a message. Its
due pump runs one (``maybe_run``) a few seconds later, once Redis answers,
unless another worker started one since. An audit lists the
jobs waiting for a message, removes those that a message in the operations
queue, kombu's unacked hash or the due set refers to, and queues a fresh
message for each of the rest, in one Lua call per job that checks the job is
still waiting. A message caught in flight between two reads is queued twice at
worst, which the executor's claim makes harmless. The audit reads every job
record and every waiting message, so it runs only after a (re)start, not on
a timer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import redis

from . import scripts
from .broker import build_message, job_id_of, unacked_message
from .keys import EXECUTE_TASK, OPERATIONS_QUEUE, JobField, Keys, text

log = logging.getLogger(__name__)

WAITING = (b"queued", b"retrying")


class QueueAudit:
    """Re-queues execute messages lost by the broker; see the module docstring."""

    def __init__(self, client: redis.Redis, keys: Keys, *, settle_s: float = 5.0, chunk: int = 1000) -> None:
        self._redis = client
        self._keys = keys
        self._settle_ms = int(settle_s * 1000)
        self._chunk = chunk
        self._requeue = scripts.register(client, "audit_requeue")
        self._start = scripts.register(client, "audit_start")
        self._wanted = threading.Event()
        self._requested_at: int | None = None

    def request(self) -> None:
        """A consumer reconnected: messages may have been lost (no Redis needed; safe from any thread)."""
        self._wanted.set()

    def maybe_run(self) -> list[str]:
        """From the due pump: run a requested audit once it has settled; returns the re-queued job ids."""
        if not self._wanted.is_set():
            return []
        now = self._now_ms()
        if self._requested_at is None:
            self._requested_at = now  # Redis answers again: count the settling time from here
        due = self._requested_at + self._settle_ms
        if now < due:
            return []
        self._wanted.clear()  # a request made from now on asks for another audit
        self._requested_at = None
        try:
            if not self._start(keys=[self._keys.audit_started], args=[due, now]):
                return []  # another worker started one after this request had settled
            return self.run()
        except redis.RedisError:
            self._wanted.set()  # Redis failed mid-audit: ask again (the pump logs the error)
            raise

    def run(self) -> list[str]:
        """Queue a message again for every waiting job that no message refers to."""
        waiting = self._waiting_jobs()
        if not waiting:
            return []
        orphans = waiting - self._referenced_jobs()
        queue = self._keys.queue(OPERATIONS_QUEUE)
        requeued = []
        for job_id in sorted(orphans):
            message = build_message(EXECUTE_TASK, [job_id], queue=OPERATIONS_QUEUE)
            if self._requeue(keys=[self._keys.job(job_id), queue], args=[message]):
                requeued.append(job_id)
        if requeued:
            log.warning("audit: %d job(s) had lost their message; queued again: %s", len(requeued), requeued)
        return requeued

    def _waiting_jobs(self) -> set[str]:
        waiting: set[str] = set()
        prefix = self._keys.job("")
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=f"{prefix}*", count=self._chunk):
            batch.append(key)
            if len(batch) >= self._chunk:
                waiting |= self._statuses(batch, prefix)
                batch = []
        return waiting | self._statuses(batch, prefix)

    def _statuses(self, keys: list[bytes], prefix: str) -> set[str]:
        if not keys:
            return set()
        with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, JobField.status)
            statuses = pipe.execute()
        return {text(key).removeprefix(prefix) for key, status in zip(keys, statuses, strict=True) if status in WAITING}

    def _referenced_jobs(self) -> set[str]:
        """Jobs that a message refers to: queued, held unacknowledged by a worker, or due later."""
        return {job_id for job_id in map(job_id_of, self._messages()) if job_id}

    def _messages(self) -> Iterator[bytes | str | dict[str, Any]]:
        queue = self._keys.queue(OPERATIONS_QUEUE)
        for start in range(0, int(self._redis.llen(queue)) + self._chunk, self._chunk):
            yield from self._redis.lrange(queue, start, start + self._chunk - 1)
        for _, record in self._redis.hscan_iter(self._keys.unacked, count=self._chunk):
            message = unacked_message(record)
            if message is not None:
                yield message
        for member in self._redis.zscan_iter(self._keys.due, count=self._chunk):
            yield text(member[0]).partition("\n")[2]

    def _now_ms(self) -> int:
        seconds, micros = self._redis.time()
        return int(seconds) * 1000 + int(micros) // 1000
