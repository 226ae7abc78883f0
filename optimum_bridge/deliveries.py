"""Callback delivery state in Redis: claim, settle, dead letters and replay, each one atomic.

The state lives on the job hash (``cb``: pending, delivered or dead) and in
the dead-letter hash. ``claim`` takes a short lease and returns the job in
the same round trip; ``settle`` records the outcome, schedules the next
attempt or files the dead letter, and releases the lease, also in one step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import redis

from . import scripts
from .broker import build_message
from .due import due_member
from .keys import CALLBACKS_QUEUE, DELIVER_TASK, JobField, Keys, text

Settlement = Literal["delivered", "retry", "dead", "later"]


@dataclass(frozen=True)
class DeliveryClaim:
    """``ok`` with the job's fields, or why the delivery is not ours to make."""

    outcome: Literal["ok", "missing", "done", "leased"]
    fields: dict[str, str]
    lease_ms: int = 0


class DeliveryStore:
    """The Redis side of callback delivery."""

    def __init__(self, client: redis.Redis, keys: Keys, *, watch_s: float = 300.0) -> None:
        self._redis = client
        self._keys = keys
        self._watch_ms = int(watch_s * 1000)
        self._claim = scripts.register(client, "delivery_claim")
        self._settle = scripts.register(client, "delivery_settle")
        self._replay = scripts.register(client, "delivery_replay")
        self._recover = scripts.register(client, "delivery_recover")

    def claim(self, job_id: str, owner: str, *, lease_ms: int) -> DeliveryClaim:
        """Take the delivery lease and read the job, unless delivered, dead or taken."""
        keys = [self._keys.job(job_id), self._lease(job_id), self._keys.callbacks_watch]
        reply = self._claim(keys=keys, args=[owner, lease_ms, self._watch_ms, job_id])
        kind = text(reply[0])
        if kind == "ok":
            raw = reply[1]
            return DeliveryClaim("ok", {text(raw[i]): text(raw[i + 1]) for i in range(0, len(raw), 2)})
        if kind == "leased":
            return DeliveryClaim("leased", {}, lease_ms=max(0, int(reply[1])))
        return DeliveryClaim("missing" if kind == "missing" else "done", {})

    def settle(
        self,
        job_id: str,
        owner: str,
        outcome: Settlement,
        *,
        next_attempt: int = 0,
        delay_s: float = 0.0,
        dead_letter: dict[str, object] | None = None,
    ) -> None:
        """Record the outcome (``later``/``retry``: try again in ``delay_s``) and release the lease."""
        member = ""
        if outcome in ("retry", "later"):
            member = due_member(self._keys, DELIVER_TASK, [job_id, next_attempt], queue=CALLBACKS_QUEUE)
        keys = [
            self._keys.job(job_id),
            self._lease(job_id),
            self._keys.stats,
            self._keys.due,
            self._keys.dead_letters,
            self._keys.callbacks_watch,
        ]
        letter = json.dumps(dead_letter or {})
        args: list[str | int] = [
            owner,
            outcome,
            member,
            int(delay_s * 1000),
            job_id,
            letter,
            self._watch_ms,
            next_attempt,
        ]
        self._settle(keys=keys, args=args)

    def dead_letters(self) -> list[dict[str, object]]:
        """Every dead letter, oldest first."""
        rows = [json.loads(v) for v in self._redis.hvals(self._keys.dead_letters)]
        return sorted(rows, key=lambda row: str(row["failed_at"]))

    def replay(self, job_ids: list[str] | None = None) -> list[str]:
        """Queue dead-lettered callbacks again (all, or the given jobs); returns those replayed."""
        ids = job_ids or [text(k) for k in self._redis.hkeys(self._keys.dead_letters)]
        replayed = []
        for job_id in ids:
            message = build_message(DELIVER_TASK, [job_id, 1], queue=CALLBACKS_QUEUE)
            keys = [
                self._keys.dead_letters,
                self._keys.job(job_id),
                self._keys.queue(CALLBACKS_QUEUE),
                self._keys.callbacks_watch,
            ]
            if self._replay(keys=keys, args=[job_id, message, self._watch_ms]):
                replayed.append(job_id)
        return replayed

    def recover(self, *, limit: int = 100) -> list[str]:
        """Queue again the pending callbacks whose watch expired with no delivery under way."""
        seconds, micros = self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        members = self._redis.zrangebyscore(self._keys.callbacks_watch, "-inf", now_ms, 0, limit)
        overdue = [text(m) for m in members if isinstance(m, bytes | str)]
        recovered = []
        for job_id in overdue:
            attempt = int(self._redis.hget(self._keys.job(job_id), JobField.cb_attempt) or 1)
            message = build_message(DELIVER_TASK, [job_id, attempt], queue=CALLBACKS_QUEUE)
            keys = [
                self._keys.job(job_id),
                self._lease(job_id),
                self._keys.queue(CALLBACKS_QUEUE),
                self._keys.callbacks_watch,
            ]
            if self._recover(keys=keys, args=[job_id, message, self._watch_ms]):
                recovered.append(job_id)
        return recovered

    def _lease(self, job_id: str) -> str:
        return self._keys.lease(f"cb:{job_id}")
