"""Callback delivery state in Redis: claim, settle, dead letters and replay, each one atomic.

A callback's *subject* is a job (its id) or a batch (``batch:<id>``). The state
lives on the subject's hash (``cb``: pending, delivered or dead) and in the
dead-letter hash. ``claim`` takes a short lease and returns the subject's
fields in the same round trip; ``settle`` records the outcome, schedules the
next attempt or files the dead letter, and releases the lease, also in one step.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Literal

import redis

from optimum_bridge.keys import CALLBACKS_QUEUE, DELIVER_BATCH_TASK, DELIVER_TASK, JobField, Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.process.kombu import build_message
from optimum_bridge.process.replicas import UNREPLICATED, NotReplicated, Replicas

log = logging.getLogger(__name__)

Settlement = Literal["delivered", "retry", "dead", "later", "queue"]
BATCH = "batch:"


def batch_subject(batch_id: str) -> str:
    """The delivery subject of a batch's callback."""
    return BATCH + batch_id


def message_for(subject: str, attempt: int) -> str:
    """The Celery message delivering attempt ``attempt`` of ``subject``'s callback."""
    if subject.startswith(BATCH):
        return build_message(DELIVER_BATCH_TASK, [subject.removeprefix(BATCH), attempt], queue=CALLBACKS_QUEUE)
    return build_message(DELIVER_TASK, [subject, attempt], queue=CALLBACKS_QUEUE)


def _due_message(keys: Keys, subject: str, attempt: int) -> str:
    return f"{keys.queue(CALLBACKS_QUEUE)}\n{message_for(subject, attempt)}"


@dataclass(frozen=True)
class DeliveryClaim:
    """``ok`` with the job's fields, or why the delivery is not ours to make."""

    outcome: Literal["ok", "missing", "done", "leased"]
    fields: dict[str, str]
    lease_ms: int = 0


class DeliveryStore:
    """The Redis side of callback delivery."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, watch_s: float = 300.0, replicas: Replicas = UNREPLICATED
    ) -> None:
        self._replicas = replicas
        self._redis = client
        self._keys = keys
        self._watch_ms = int(watch_s * 1000)
        self._claim = scripts.register(client, "delivery_claim")
        self._settle = scripts.register(client, "delivery_settle")
        self._replay = scripts.register(client, "delivery_replay")
        self._recover = scripts.register(client, "delivery_recover")

    def claim(self, subject: str, owner: str, *, lease_ms: int) -> DeliveryClaim:
        """Take the delivery lease and read the job, unless delivered, dead or taken.

        With ``BRIDGE_REDIS_MIN_REPLICAS``, ``NotReplicated`` unless the claim -- and so, replication
        being in order, the job's finished state written before it -- reached the replicas.
        """
        keys = [self._hash(subject), self._lease(subject), self._keys.callbacks_watch]
        reply = self._replicas.run(self._redis, self._claim, keys=keys, args=[owner, lease_ms, self._watch_ms, subject])
        kind = text(reply[0])
        if kind == "ok":
            raw = reply[1]
            return DeliveryClaim("ok", {text(raw[i]): text(raw[i + 1]) for i in range(0, len(raw), 2)})
        if kind == "leased":
            return DeliveryClaim("leased", {}, lease_ms=max(0, int(reply[1])))
        return DeliveryClaim("missing" if kind == "missing" else "done", {})

    def settle(
        self,
        subject: str,
        owner: str,
        outcome: Settlement,
        *,
        next_attempt: int = 0,
        delay_s: float = 0.0,
        dead_letter: dict[str, object] | None = None,
    ) -> None:
        """Record the outcome (``later``/``retry``: try again in ``delay_s``; ``queue``: at once, on the
        callbacks queue) and release the lease."""
        member = ""
        if outcome in ("retry", "later", "queue"):
            member = _due_message(self._keys, subject, next_attempt)
        keys = [
            self._hash(subject),
            self._lease(subject),
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
            subject,
            letter,
            self._watch_ms,
            next_attempt,
        ]
        if outcome != "delivered":
            self._settle(keys=keys, args=args)
            return
        try:  # replicated, so that a failover does not send a delivered callback again
            self._replicas.run(self._redis, self._settle, keys=keys, args=args)
        except NotReplicated as exc:
            log.warning("%s: callback delivered, not yet on the replicas: %s", subject, exc)

    def dead_letters(self) -> list[dict[str, object]]:
        """Every dead letter, oldest first."""
        rows = [json.loads(v) for v in self._redis.hvals(self._keys.dead_letters)]
        return sorted(rows, key=lambda row: str(row["failed_at"]))

    def replay(self, subjects: list[str] | None = None) -> list[str]:
        """Queue dead-lettered callbacks again (all, or the given jobs and batches); returns those replayed."""
        ids = subjects or [text(k) for k in self._redis.hkeys(self._keys.dead_letters)]
        replayed = []
        for subject in ids:
            keys = [
                self._keys.dead_letters,
                self._hash(subject),
                self._keys.queue(CALLBACKS_QUEUE),
                self._keys.callbacks_watch,
            ]
            if self._replay(keys=keys, args=[subject, message_for(subject, 1), self._watch_ms]):
                replayed.append(subject)
        return replayed

    def sweep(self, *, limit: int = 100, every_s: float = 2.0) -> float:
        """``recover``, then the seconds until the next turn: at once while full pages come back (a batch
        of cached answers puts all its callbacks in the watch at once), else ``every_s``."""
        overdue, recovered = self.recover(limit=limit)
        return 0.0 if len(overdue) == limit and recovered else every_s

    def recover(self, *, limit: int = 100) -> tuple[list[str], list[str]]:
        """Queue again the pending callbacks whose watch expired with no delivery under way: the (at most
        ``limit``) overdue ones, and those queued again."""
        seconds, micros = self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        members = self._redis.zrangebyscore(self._keys.callbacks_watch, "-inf", now_ms, 0, limit)
        overdue = [text(m) for m in members if isinstance(m, bytes | str)]
        recovered = []
        for subject in overdue:
            attempt = int(self._redis.hget(self._hash(subject), JobField.cb_attempt) or 1)
            keys = [
                self._hash(subject),
                self._lease(subject),
                self._keys.queue(CALLBACKS_QUEUE),
                self._keys.callbacks_watch,
            ]
            if self._recover(keys=keys, args=[subject, message_for(subject, attempt), self._watch_ms]):
                recovered.append(subject)
        return overdue, recovered

    def _hash(self, subject: str) -> str:
        if subject.startswith(BATCH):
            return self._keys.batch(subject.removeprefix(BATCH))
        return self._keys.job(subject)

    def _lease(self, subject: str) -> str:
        return self._keys.lease(f"cb:{subject}")
