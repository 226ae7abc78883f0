"""The Python way in (spec §7): ``BridgeClient.from_env().submit(...)``.

Producers need only Redis: submitting writes the job and its queue message in
one round trip per batch, and ``get``/``wait`` read the job record the workers
update. Callback URLs are checked here, at submission, and again at delivery.
Every method runs ``ProducerSteps`` (shared with ``AsyncBridgeClient``) on a
blocking Redis client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.keys import Keys
from optimum_bridge.process.redis import redis_client
from optimum_bridge.process.replicas import Replicas
from optimum_bridge.producer_steps import MAX_BATCH, InvalidOperation, ProducerSteps, next_poll_s, timed_out
from optimum_bridge.quota.forecast import Backlog
from optimum_bridge.quota.limiter import LimiterState, RateLimiter
from optimum_bridge.schemas import Batch, BatchStatus, Callback, JobStatus, Operation, Priority
from optimum_bridge.settings import Settings, load_settings
from optimum_bridge.steps import SyncDriver

__all__ = ["MAX_BATCH", "BridgeClient", "InvalidOperation"]

Finished = TypeVar("Finished", JobStatus, BatchStatus)


class BridgeClient:
    """Submit operations and read their outcome."""

    def __init__(self, settings: Settings, *, client: redis.Redis | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._owns_redis = client is None
        self._redis = client or redis_client(settings)
        self._keys = Keys(settings.key_prefix)
        self._clock = clock
        self._steps = ProducerSteps(settings, clock=clock)
        self._run = SyncDriver(self._redis, Replicas.of(settings))

    @classmethod
    def from_env(cls) -> BridgeClient:
        """A client configured from the environment (and ``.env``)."""
        return cls(load_settings())

    def __repr__(self) -> str:
        return f"BridgeClient(prefix={self.settings.key_prefix!r})"

    def close(self) -> None:
        """Close the Redis connections (when the client opened them itself)."""
        if self._owns_redis:
            self._redis.close()

    def __enter__(self) -> BridgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def redis(self) -> redis.Redis:
        """The Redis connection (the ingress reads readiness and metrics through it)."""
        return self._redis

    def validate(self, operation: Operation | Mapping[str, Any]) -> Operation:
        """The operation as a checked model, or ``InvalidOperation`` naming the field."""
        return self._run(self._steps.validate(operation))

    def submit(self, operation: Operation | Mapping[str, Any]) -> str:
        """Queue one operation; returns its job id (the existing one for a repeated idempotency key)."""
        return self._run(self._steps.submit(operation))

    def submit_many(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[str]:
        """Queue operations, one Redis round trip per batch of up to 1,000; all are checked first."""
        return [job_id for job_id, _ in self.submit_many_detailed(operations)]

    def submit_many_detailed(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[tuple[str, bool]]:
        """Like ``submit_many``, with whether each job was created (False: idempotent repeat)."""
        return self._run(self._steps.submit_many(operations))

    def get(self, job_id: str) -> JobStatus:
        """The job's current status, with its forecast while it waits (``JobNotFound`` when unknown or expired)."""
        return self._run(self._steps.get(job_id))

    def backlog(self, account: str) -> Backlog:
        """An account's lanes now, its next slot and when each lane's last job should start."""
        return self._run(self._steps.forecast.backlog(account))

    def quota_state(self, account: str) -> LimiterState:
        """An account's limiter now: configured, learned and why, calls in the window, pause (``KeyError``: unknown)."""
        settings = self.settings
        limiter = RateLimiter(
            self._redis,
            self._keys,
            settings.accounts[account].rate_limit,
            margin_s=settings.rate_limit_margin_s,
            burst=settings.rate_burst,
            account=account,
        )
        return limiter.state()

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a job that has not started its call (``NotWaiting`` if it has, or is finished)."""
        return self._run(self._steps.cancel(job_id))

    def cancel_batch(self, batch_id: str) -> BatchStatus:
        """Cancel, in one step, every job of a batch that has not started its call."""
        return self._run(self._steps.cancel_batch(batch_id))

    def reprioritize(self, job_id: str, priority: Priority) -> JobStatus:
        """Move a waiting job to another lane, keeping its age there (``NotWaiting`` once it runs)."""
        return self._run(self._steps.reprioritize(job_id, priority))

    def submit_batch(
        self,
        operations: Iterable[Operation | Mapping[str, Any]],
        *,
        callback: Callback | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Queue a batch (all checked first); one ``batch.completed`` callback when every job is final."""
        return self._run(self._steps.submit_batch(operations, callback=callback, metadata=metadata))

    def get_batch(self, batch_id: str) -> BatchStatus:
        """The batch's status and forecast (``BatchNotFound`` when unknown or expired)."""
        return self._run(self._steps.batches.status(batch_id))

    def batch_accounts(self, batch_id: str) -> list[str]:
        """The accounts of a batch's operations (``BatchNotFound`` when unknown or expired)."""
        return self._run(self._steps.batches.accounts(batch_id))

    def batch_jobs(self, batch_id: str) -> list[str]:
        """The batch's job ids, in submission order."""
        return self._run(self._steps.batches.job_ids(batch_id))

    def wait(self, job_id: str, timeout: float, *, poll_s: float = 0.1) -> JobStatus:
        """Read the job until it is finished; ``TimeoutError`` after ``timeout`` seconds."""
        return self._poll(lambda: self.get(job_id), timeout=timeout, poll_s=poll_s)

    def wait_batch(self, batch_id: str, timeout: float, *, poll_s: float = 0.25) -> BatchStatus:
        """Read the batch until every job of it is final; ``TimeoutError`` after ``timeout`` seconds."""
        return self._poll(lambda: self.get_batch(batch_id), timeout=timeout, poll_s=poll_s)

    def _poll(self, read: Callable[[], Finished], *, timeout: float, poll_s: float) -> Finished:
        """``read()`` until what it reads is finished (paced by ``next_poll_s``); ``TimeoutError`` past ``timeout``."""
        deadline = self._clock.monotonic() + timeout
        while True:
            status = read()
            if status.finished:
                return status
            left = deadline - self._clock.monotonic()
            if left <= 0:
                raise timed_out(status, timeout)
            self._clock.sleep(min(left, next_poll_s(status, now=self._clock.now(), poll_s=poll_s)))
