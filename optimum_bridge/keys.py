"""Every Redis key the bridge writes, built in one place from one prefix.

Two bridges can share a Redis by using different ``BRIDGE_KEY_PREFIX`` values,
and an operator can find everything we store with ``SCAN MATCH <prefix>*``.
Celery's own keys (queues, unacked messages, bindings) carry the same prefix
through kombu's ``global_keyprefix``.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

OPERATIONS_QUEUE = "bridge.operations"
CALLBACKS_QUEUE = "bridge.callbacks"
EXECUTE_TASK = "bridge.execute"
DELIVER_TASK = "bridge.deliver_callback"


class JobField(StrEnum):
    """The fields of a job hash (``Keys.job``): declared here once, given to the Lua scripts as ``FIELD``."""

    op = "op"  # the Operation, as JSON
    status = "status"  # queued, running, retrying, succeeded, failed
    attempts = "attempts"  # calls sent so far
    inflight = "inflight"  # "1" while a request may be on its way (a crash leaves it set)
    submitted_at = "submitted_at"
    finished_at = "finished_at"
    response = "response"  # the last ApiResponse, as JSON
    error = "error"  # the last ErrorInfo, as JSON
    cb = "cb"  # callback delivery: pending, delivered or dead
    cb_attempt = "cb_attempt"  # the next callback delivery attempt


class Keys:
    """Key names under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def job(self, job_id: str) -> str:
        """Hash: the job record (operation, state, result)."""
        return f"{self.prefix}job:{job_id}"

    def lease(self, job_id: str) -> str:
        """String: which worker is executing the job right now."""
        return f"{self.prefix}lease:{job_id}"

    def idempotency(self, key: str) -> str:
        """String: job id for an idempotency key (hashed: keys are free text)."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.prefix}idem:{digest}"

    @property
    def token(self) -> str:
        """Hash: the shared access token, its fingerprint and expiry."""
        return f"{self.prefix}token"

    @property
    def token_lock(self) -> str:
        """String: owner of the token refresh lock."""
        return f"{self.prefix}token:lock"

    @property
    def limiter_log(self) -> str:
        """Sorted set: start times (ms, Redis clock) of recent and reserved calls."""
        return f"{self.prefix}limiter:log"

    @property
    def limiter_pause(self) -> str:
        """String: Redis-clock ms until which no call may start (after a 429)."""
        return f"{self.prefix}limiter:pause"

    @property
    def due(self) -> str:
        """Sorted set: Celery messages to enqueue at their score (ms, Redis clock)."""
        return f"{self.prefix}due"

    @property
    def callbacks_watch(self) -> str:
        """Sorted set: job id -> when (ms, Redis clock) its pending callback is presumed lost."""
        return f"{self.prefix}cbwatch"

    @property
    def dead_letters(self) -> str:
        """Hash: job id -> undeliverable callback record."""
        return f"{self.prefix}deadletters"

    @property
    def stats(self) -> str:
        """Hash: counters for metrics (calls by status, 429s, token refreshes...)."""
        return f"{self.prefix}stats"

    @property
    def workers(self) -> str:
        """Sorted set: worker name -> last heartbeat (epoch seconds)."""
        return f"{self.prefix}workers"

    @property
    def unacked(self) -> str:
        """Hash (kombu's): delivery tag -> message a worker holds unacknowledged."""
        return f"{self.prefix}unacked"

    @property
    def audit_started(self) -> str:
        """String: when (ms, Redis clock) the last lost-message audit started."""
        return f"{self.prefix}audit:started"

    def queue(self, name: str) -> str:
        """The Redis list behind a Celery queue (kombu adds the same prefix)."""
        return f"{self.prefix}{name}"


def text(value: bytes | str) -> str:
    """A Redis reply as ``str`` (clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value
