"""The Python way in (spec §7): ``BridgeClient.from_env().submit(...)``.

Producers need only Redis: submitting writes the job and its queue message in
one round trip per batch, and ``get``/``wait`` read the job record the workers
update. Callback URLs are checked here, at submission, and again at delivery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis
from pydantic import ValidationError

from optimum_bridge.callbacks.ssrf import check_callback_url
from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.errors import BridgeError, JobNotFound, NotWaiting
from optimum_bridge.jobs.batches import BatchStore
from optimum_bridge.jobs.status import to_status
from optimum_bridge.jobs.store import JobStore
from optimum_bridge.keys import Keys
from optimum_bridge.process.redis import Replicas, redis_client
from optimum_bridge.quota.forecast import Backlog, Forecaster
from optimum_bridge.quota.limiter import LimiterState, RateLimiter
from optimum_bridge.schemas import (
    MAX_BATCH_OPERATIONS,
    Batch,
    BatchMeta,
    BatchStatus,
    Callback,
    JobStatus,
    Operation,
    Priority,
    first_error,
)
from optimum_bridge.settings import Settings, load_settings
from optimum_bridge.upstream.documents import DocumentStore

log = logging.getLogger(__name__)

MAX_BATCH = 1000
#: The accounts whose missing OpenAPI document this process has logged (once each).
_UNCHECKED_LOGGED: set[str] = set()
Finished = TypeVar("Finished", JobStatus, BatchStatus)


class InvalidOperation(BridgeError):
    """An operation was refused; the message names the field."""


class BridgeClient:
    """Submit operations and read their outcome."""

    def __init__(self, settings: Settings, *, client: redis.Redis | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._owns_redis = client is None
        self._redis = client or redis_client(settings)
        self._keys = Keys(settings.key_prefix)
        self._jobs = JobStore(
            self._redis,
            self._keys,
            result_ttl_s=settings.result_ttl_s,
            pending_ttl_s=settings.pending_ttl_s,
            clock=clock,
            replicas=Replicas.of(settings),
        )
        self._forecaster = Forecaster(self._redis, self._keys, settings.quotas())
        self._batches = BatchStore(
            self._redis,
            self._keys,
            self._jobs,
            self._forecaster,
            result_ttl_s=settings.result_ttl_s,
            pending_ttl_s=settings.pending_ttl_s,
            clock=clock,
            replicas=Replicas.of(settings),
        )
        self._clock = clock
        self._documents = DocumentStore(self._redis, self._keys, clock=clock)

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
        try:
            op = operation if isinstance(operation, Operation) else Operation.model_validate(operation)
        except ValidationError as exc:
            raise InvalidOperation(first_error(exc)) from None
        if op.account not in self.settings.accounts:
            raise InvalidOperation(f"account: unknown account {op.account!r}")
        if op.callback is not None:
            try:
                check_callback_url(str(op.callback.url), allow_private=self.settings.callback_allow_private)
            except BridgeError as exc:
                raise InvalidOperation(str(exc)) from None
        self._check_against_api(op)
        return op

    def _check_against_api(self, op: Operation) -> None:
        """Refuse (strict) or log (warn) what the API's OpenAPI document does not allow (spec §13)."""
        mode = self.settings.validate_operations
        if mode == "off":
            return
        checker = self._documents.checker(op.account)
        if checker is None:
            if op.account not in _UNCHECKED_LOGGED:
                _UNCHECKED_LOGGED.add(op.account)
                # INFO: a CLI run prints only its own answer; workers and the ingress log it.
                log.info("no OpenAPI document of account %s in Redis: operations are queued unchecked", op.account)
            return
        refusal = checker.check(op)
        if refusal is None:
            return
        if mode == "strict":
            raise InvalidOperation(refusal)
        log.warning("operation not in the API's document, queued anyway (warn mode): %s", refusal)

    def submit(self, operation: Operation | Mapping[str, Any]) -> str:
        """Queue one operation; returns its job id (the existing one for a repeated idempotency key)."""
        return self._jobs.submit_many([self.validate(operation)])[0][0]

    def submit_many(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[str]:
        """Queue operations, one Redis round trip per batch of up to 1,000; all are checked first."""
        return [job_id for job_id, _ in self.submit_many_detailed(operations)]

    def submit_many_detailed(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[tuple[str, bool]]:
        """Like ``submit_many``, with whether each job was created (False: idempotent repeat)."""
        checked = self._check_all(operations)
        results: list[tuple[str, bool]] = []
        for start in range(0, len(checked), MAX_BATCH):
            results += self._jobs.submit_many(checked[start : start + MAX_BATCH])
        return results

    def _check_all(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[Operation]:
        checked = []
        for index, operation in enumerate(operations):
            try:
                checked.append(self.validate(operation))
            except InvalidOperation as exc:
                raise InvalidOperation(f"operations[{index}].{exc}") from None
        return checked

    def get(self, job_id: str) -> JobStatus:
        """The job's current status, with its forecast while it waits (``JobNotFound`` when unknown or expired)."""
        fields = self._jobs.shown(job_id)
        status = to_status(job_id, fields)
        forecast = self._forecaster.job(job_id, fields)
        if forecast is None:
            return status
        return status.model_copy(
            update={"position": forecast.position, "estimated_start_at": forecast.estimated_start_at}
        )

    def backlog(self, account: str) -> Backlog:
        """An account's lanes now, its next slot and when each lane's last job should start."""
        return self._forecaster.backlog(account)

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
        [outcome] = self._jobs.cancel([job_id])
        if outcome == "missing":
            raise JobNotFound(job_id)
        if outcome != "cancelled":
            raise NotWaiting(f"job {job_id} is {'running' if outcome == 'running' else 'finished'}: not cancelled")
        return self.get(job_id)

    def cancel_batch(self, batch_id: str) -> BatchStatus:
        """Cancel, in one step, every job of a batch that has not started its call."""
        self._jobs.cancel(self._batches.job_ids(batch_id) or [])
        return self.get_batch(batch_id)

    def reprioritize(self, job_id: str, priority: Priority) -> JobStatus:
        """Move a waiting job to another lane, keeping its age there (``NotWaiting`` once it runs)."""
        outcome = self._jobs.reprioritize(job_id, priority)
        if outcome == "missing":
            raise JobNotFound(job_id)
        if outcome != "moved":
            raise NotWaiting(f"job {job_id} is {'running' if outcome == 'running' else 'finished'}: not moved")
        return self.get(job_id)

    def submit_batch(
        self,
        operations: Iterable[Operation | Mapping[str, Any]],
        *,
        callback: Callback | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Queue a batch (all checked first); one ``batch.completed`` callback when every job is final."""
        checked = self._check_all(operations)
        if not 1 <= len(checked) <= MAX_BATCH_OPERATIONS:
            raise InvalidOperation(f"operations: expected 1 to {MAX_BATCH_OPERATIONS} operations, got {len(checked)}")
        hook = self._check_callback(callback)
        try:
            meta = BatchMeta.model_validate({"metadata": dict(metadata or {})}).metadata
        except ValidationError as exc:
            raise InvalidOperation(first_error(exc)) from None
        return self._batches.create(checked, callback=hook, metadata=meta)

    def get_batch(self, batch_id: str) -> BatchStatus:
        """The batch's status and forecast (``BatchNotFound`` when unknown or expired)."""
        return self._batches.status(batch_id)

    def batch_accounts(self, batch_id: str) -> list[str]:
        """The accounts of a batch's operations (``BatchNotFound`` when unknown or expired)."""
        return self._batches.accounts(batch_id)

    def batch_jobs(self, batch_id: str) -> list[str]:
        """The batch's job ids, in submission order."""
        return self._batches.job_ids(batch_id)

    def wait_batch(self, batch_id: str, timeout: float, *, poll_s: float = 0.25) -> BatchStatus:
        """Poll until every job of the batch is final; ``TimeoutError`` after ``timeout`` seconds."""
        status = self._poll(lambda: self.get_batch(batch_id), timeout=timeout, poll_s=poll_s)
        if not status.finished:
            raise TimeoutError(f"batch {batch_id} still running after {timeout}s ({status.counts})")
        return status

    def _check_callback(self, callback: Callback | Mapping[str, Any] | None) -> Callback | None:
        if callback is None:
            return None
        try:
            hook = callback if isinstance(callback, Callback) else Callback.model_validate(callback)
            check_callback_url(str(hook.url), allow_private=self.settings.callback_allow_private)
        except ValidationError as exc:
            raise InvalidOperation(f"callback.{first_error(exc)}") from None
        except BridgeError as exc:
            raise InvalidOperation(str(exc)) from None
        return hook

    def wait(self, job_id: str, timeout: float, *, poll_s: float = 0.1) -> JobStatus:
        """Poll until the job is finished; ``TimeoutError`` after ``timeout`` seconds."""
        status = self._poll(lambda: self.get(job_id), timeout=timeout, poll_s=poll_s)
        if not status.finished:
            raise TimeoutError(f"job {job_id} still {status.status} after {timeout}s")
        return status

    def _poll(self, read: Callable[[], Finished], *, timeout: float, poll_s: float) -> Finished:
        """``read()`` until what it reads is finished or ``timeout`` seconds pass; the last reading."""
        deadline = self._clock.monotonic() + timeout
        while True:
            status = read()
            if status.finished or self._clock.monotonic() >= deadline:
                return status
            self._clock.sleep(min(poll_s, max(0.0, deadline - self._clock.monotonic())))
