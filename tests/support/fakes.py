"""``JobStore`` in memory, for the executor's rules in the fast tier.

It keeps the refusals of the Lua scripts (a finished job is never claimed or
moved again; a stale dispatch or another worker's lease refuses a claim; a
call marked sent and not finished is in flight). ``tests/integration/
test_executor.py::test_the_fake_store_answers_as_the_lua_scripts_do`` runs one
sequence of calls through it and through the real ``JobStore``, so the two
cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from optimum_bridge.jobs.outcomes import Claim, Completion
from optimum_bridge.schemas import ApiResponse, ErrorInfo, Operation

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
LEASE_MS = 6000


@dataclass
class Record:
    """One job, as the Redis hash holds it."""

    operation: Operation
    submitted_at: datetime
    status: str = "queued"
    attempts: int = 0
    inflight: bool = False
    response: ApiResponse | None = None
    error: ErrorInfo | None = None
    callback_queued: bool = False
    dispatch: int = 0
    dispatched: bool = False  # given a slot and not claimed yet (in the ``dispatched`` set)


@dataclass
class Rescheduled:
    job_id: str
    delay_s: float
    status: str | None


@dataclass
class FakeJobs:
    """``JobStore`` in memory, with the same refusals as its Lua scripts."""

    records: dict[str, Record] = field(default_factory=dict)
    leases: dict[str, tuple[str, int]] = field(default_factory=dict)  # lease key -> (owner, ms left)
    due: list[Rescheduled] = field(default_factory=list)
    completions: int = 0

    def add(self, operation: dict[str, Any], **fields: Any) -> str:
        job_id = f"job{len(self.records) + 1}"
        self.records[job_id] = Record(Operation.model_validate(operation), fields.pop("submitted_at", NOW), **fields)
        return job_id

    def lease_key(self, job_id: str) -> str:
        return f"lease:{job_id}"

    def operation(self, job_id: str) -> Operation:
        return self.records[job_id].operation

    def dispatch(self, job_id: str) -> int:
        """What the scheduler does before a worker runs a job: a new dispatch number."""
        record = self.records.get(job_id)
        if record is None:
            return 1
        record.dispatch += 1
        record.dispatched = True
        return record.dispatch

    def claim(
        self, job_id: str, dispatch: int, owner: str, *, quota: Any, account: str, lease_ms: int, send: bool = False
    ) -> Claim:
        record = self.records.get(job_id)
        if record is None:
            return Claim("missing")
        if record.status in ("succeeded", "failed"):
            return Claim("final")
        if dispatch != record.dispatch or not record.dispatched:  # a later message of a claimed dispatch too
            return Claim("stale")
        if self.lease_key(job_id) in self.leases:
            return Claim("leased", lease_ms=self.leases[self.lease_key(job_id)][1])
        self.leases[self.lease_key(job_id)] = (owner, lease_ms)
        record.status, record.dispatched = "running", False
        inflight, attempts = record.inflight, record.attempts
        sent = self.mark_sent(job_id) if send and not inflight else None  # claim.lua's sent-at step
        return Claim(
            "ok",
            inflight=inflight,
            attempts=attempts,
            operation=record.operation,
            submitted_at=record.submitted_at,
            sent=sent,
        )

    def mark_sent(self, job_id: str, dispatch: int = 0, **_: Any) -> int:
        record = self.records[job_id]
        record.attempts += 1
        record.inflight = True
        return record.attempts

    def _release(self, job_id: str, owner: str) -> None:
        if self.leases.get(self.lease_key(job_id), ("",))[0] == owner:
            del self.leases[self.lease_key(job_id)]

    def complete(
        self,
        job_id: str,
        owner: str,
        *,
        succeeded: bool,
        response: ApiResponse | None,
        error: ErrorInfo | None,
        callback: bool,
        batch_id: str | None = None,
    ) -> bool:
        record = self.records[job_id]
        if record.status in ("succeeded", "failed"):
            return False
        record.status = "succeeded" if succeeded else "failed"
        record.response, record.error, record.inflight = response, error, False
        record.callback_queued = callback
        self.completions += 1
        self._release(job_id, owner)
        return True

    def finish(
        self,
        job_id: str,
        owner: str,
        *,
        hold_ms: int | None = None,
        counts: tuple[str, ...] = (),
        take: object = None,
        **kwargs: Any,
    ) -> Completion:
        """``complete``; with ``hold_ms``, the callback is held for the caller (``callback_queued`` stays False)."""
        finished = self.complete(job_id, owner, **kwargs)
        if not (finished and hold_ms is not None and kwargs["callback"]):
            return Completion(finished)
        self.records[job_id].callback_queued = False
        return Completion(True, held=True, fields={"id": job_id, "status": self.records[job_id].status})

    def reschedule(
        self,
        job_id: str,
        owner: str,
        *,
        account: str,
        delay_s: float,
        status: Literal["queued", "retrying"],
        error: ErrorInfo | None = None,
        response: ApiResponse | None = None,
        counts: tuple[str, ...] = (),
    ) -> bool:
        record = self.records[job_id]
        if record.status in ("succeeded", "failed"):
            return False
        record.status = status or record.status
        record.inflight = False
        record.error = error or record.error
        record.response = response or record.response
        self._release(job_id, owner)
        self.due.append(Rescheduled(job_id, delay_s, status))
        return True
