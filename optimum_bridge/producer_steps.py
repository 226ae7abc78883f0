"""What a producer does, written once as steps (``optimum_bridge.steps``) for both clients.

``ProducerSteps`` checks operations (the model, the account, the callback URL,
the API's OpenAPI document) and builds the steps of every client method --
submit, get, cancel, reprioritize, batches -- over the job, batch and
forecast steps. ``BridgeClient`` runs them on a blocking Redis client and
``AsyncBridgeClient`` on an asyncio one, so the two cannot drift apart.
``next_poll_s`` is the one pacing rule of their ``wait``: never faster than
the job can change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from pydantic import ValidationError

from optimum_bridge.accounts.known import KnownAccounts
from optimum_bridge.callbacks.ssrf import check_callback_url
from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.errors import BridgeError, JobNotFound, NotWaiting
from optimum_bridge.jobs.batches import BatchSteps
from optimum_bridge.jobs.status import to_status
from optimum_bridge.jobs.steps import JobSteps
from optimum_bridge.keys import Keys
from optimum_bridge.quota.forecast import ForecastSteps
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
from optimum_bridge.settings import Settings
from optimum_bridge.steps import Blocking, Steps
from optimum_bridge.upstream.documents import DocumentCache

log = logging.getLogger(__name__)

MAX_BATCH = 1000
#: The longest a ``wait`` sleeps between two readings: a waiting job's forecast can move earlier
#: (jobs ahead of it cancelled), and someone else may cancel it.
MAX_POLL_S = 2.0
#: The accounts whose missing OpenAPI document this process has logged (once each).
_UNCHECKED_LOGGED: set[str] = set()


class InvalidOperation(BridgeError):
    """An operation was refused; the message names the field."""


def next_poll_s(status: JobStatus | BatchStatus, *, now: datetime, poll_s: float) -> float:
    """How long a ``wait`` sleeps before reading ``status`` again.

    A job waiting for its slot cannot start before its forecast start, nor a
    batch end before its last job starts: no reading before then (up to
    ``MAX_POLL_S``). Otherwise ``poll_s``: a call under way ends any moment.
    """
    moment = status.estimated_done_at if isinstance(status, BatchStatus) else status.estimated_start_at
    if moment is None:
        return poll_s
    return min(MAX_POLL_S, max(poll_s, (moment - now).total_seconds()))


def timed_out(status: JobStatus | BatchStatus, timeout: float) -> TimeoutError:
    """The error of a ``wait`` whose job or batch is not finished after ``timeout`` seconds."""
    if isinstance(status, BatchStatus):
        return TimeoutError(f"batch {status.id} still running after {timeout}s ({status.counts})")
    return TimeoutError(f"job {status.id} still {status.status} after {timeout}s")


def not_changed(kind: str, subject: str, outcome: str, verb: str) -> NotWaiting:
    """The refusal of a control on a job that runs or is finished."""
    return NotWaiting(f"{kind} {subject} is {'running' if outcome == 'running' else 'finished'}: not {verb}")


class ProducerSteps:
    """Every producer operation as steps; holds no connection."""

    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        keys = Keys(settings.key_prefix)
        pending_ttl = settings.pending_ttl_s
        self.jobs = JobSteps(keys, settings.result_ttl_s, pending_ttl, clock)
        self.forecast = ForecastSteps(keys, settings.quotas())
        self.batches = BatchSteps(keys, self.jobs, self.forecast, settings.result_ttl_s, pending_ttl, clock)
        self.documents = DocumentCache(keys, clock=clock)
        self.known = KnownAccounts(keys)

    def validate(self, operation: Operation | Mapping[str, Any], *, found: set[str] | None = None) -> Steps[Operation]:
        """The operation as a checked model, or ``InvalidOperation`` naming the field (``found``: the runtime
        accounts this submission already found)."""
        try:
            op = operation if isinstance(operation, Operation) else Operation.model_validate(operation)
        except ValidationError as exc:
            raise InvalidOperation(first_error(exc)) from None
        if op.account not in self.settings.accounts and not (yield from self.known.exists(op.account, found=found)):
            raise InvalidOperation(f"account: unknown account {op.account!r}")
        if op.callback is not None:
            yield from self.check_callback_url(str(op.callback.url))
        yield from self._check_against_api(op)
        return op

    def check_callback_url(self, url: str) -> Steps[None]:
        """``InvalidOperation`` if callbacks may not go to ``url`` (its host resolved: a blocking step)."""
        allow_private = self.settings.callback_allow_private
        try:
            if allow_private:  # nothing to resolve: checked here
                check_callback_url(url, allow_private=True)
            else:
                yield Blocking(partial(check_callback_url, url, allow_private=False))
        except BridgeError as exc:
            raise InvalidOperation(str(exc)) from None

    def _check_against_api(self, op: Operation) -> Steps[None]:
        """Refuse (strict) or log (warn) what the API's OpenAPI document does not allow (spec §13)."""
        mode = self.settings.validate_operations
        if mode == "off":
            return
        checker = yield from self.documents.checker(op.account)
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

    def check_all(self, operations: Iterable[Operation | Mapping[str, Any]]) -> Steps[list[Operation]]:
        """Every operation checked (``InvalidOperation`` naming ``operations[i].field`` at the first bad one)."""
        checked = []
        found: set[str] = set()
        for index, operation in enumerate(operations):
            try:
                checked.append((yield from self.validate(operation, found=found)))
            except InvalidOperation as exc:
                raise InvalidOperation(f"operations[{index}].{exc}") from None
        return checked

    def submit_many(self, operations: Iterable[Operation | Mapping[str, Any]]) -> Steps[list[tuple[str, bool]]]:
        """Check every operation, then queue them, one round trip per 1,000: ``(job id, created)`` each."""
        checked = yield from self.check_all(operations)
        results: list[tuple[str, bool]] = []
        for start in range(0, len(checked), MAX_BATCH):
            results += yield from self.jobs.submit_many(checked[start : start + MAX_BATCH])
        yield from self.documents.ask()
        return results

    def submit(self, operation: Operation | Mapping[str, Any]) -> Steps[str]:
        """Queue one operation: its job id (the existing one for a repeated idempotency key)."""
        checked = yield from self.validate(operation)
        [(job_id, _)] = yield from self.jobs.submit_many([checked])
        yield from self.documents.ask()
        return job_id

    def get(self, job_id: str) -> Steps[JobStatus]:
        """The job's status, with its forecast while it waits (``JobNotFound`` when unknown or expired)."""
        fields = yield from self.jobs.shown(job_id)
        status = to_status(job_id, fields)
        forecast = yield from self.forecast.job(job_id, fields)
        if forecast is None:
            return status
        return status.model_copy(
            update={"position": forecast.position, "estimated_start_at": forecast.estimated_start_at}
        )

    def cancel(self, job_id: str) -> Steps[JobStatus]:
        """Cancel a job that has not started its call (``NotWaiting`` if it has, or is finished)."""
        [outcome] = yield from self.jobs.cancel([job_id])
        if outcome == "missing":
            raise JobNotFound(job_id)
        if outcome != "cancelled":
            raise not_changed("job", job_id, outcome, "cancelled")
        return (yield from self.get(job_id))

    def cancel_batch(self, batch_id: str) -> Steps[BatchStatus]:
        """Cancel, in one step, every job of a batch that has not started its call."""
        yield from self.jobs.cancel((yield from self.batches.job_ids(batch_id)))
        return (yield from self.batches.status(batch_id))

    def reprioritize(self, job_id: str, priority: Priority) -> Steps[JobStatus]:
        """Move a waiting job to another lane, keeping its age (``NotWaiting`` once it runs)."""
        outcome = yield from self.jobs.reprioritize(job_id, priority)
        if outcome == "missing":
            raise JobNotFound(job_id)
        if outcome != "moved":
            raise not_changed("job", job_id, outcome, "moved")
        return (yield from self.get(job_id))

    def submit_batch(
        self,
        operations: Iterable[Operation | Mapping[str, Any]],
        *,
        callback: Callback | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Steps[Batch]:
        """Queue a batch (all checked first); one ``batch.completed`` callback when every job is final."""
        checked = yield from self.check_all(operations)
        if not 1 <= len(checked) <= MAX_BATCH_OPERATIONS:
            raise InvalidOperation(f"operations: expected 1 to {MAX_BATCH_OPERATIONS} operations, got {len(checked)}")
        hook = None
        if callback is not None:
            try:
                hook = callback if isinstance(callback, Callback) else Callback.model_validate(callback)
            except ValidationError as exc:
                raise InvalidOperation(f"callback.{first_error(exc)}") from None
            yield from self.check_callback_url(str(hook.url))
        try:
            meta = BatchMeta.model_validate({"metadata": dict(metadata or {})}).metadata
        except ValidationError as exc:
            raise InvalidOperation(first_error(exc)) from None
        batch = yield from self.batches.create(checked, callback=hook, metadata=meta)
        yield from self.documents.ask()
        return batch
