"""Job records in Redis and every change of their state, each one atomic.

A job is a hash (``keys.job``): the operation, its state, attempts, the last
answer and error. ``submit`` creates jobs and queues their messages in one
Lua call per batch, honouring idempotency keys (the scripts are in ``lua/``). ``claim`` takes a per-job
lease so a redelivered message never runs a job twice at once, and refuses
finished jobs so a redelivery never runs it again. ``complete`` moves a job to
its final state once -- and queues its callback in the same step, so there is
never a second callback -- and ``reschedule`` parks it in the due set.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import redis

from . import scripts
from .broker import build_message
from .clock import SYSTEM_CLOCK, Clock
from .due import due_member
from .errors import JobNotFound
from .keys import CALLBACKS_QUEUE, DELIVER_TASK, EXECUTE_TASK, OPERATIONS_QUEUE, JobField, Keys, text
from .schemas import ApiResponse, ErrorInfo, JobStatus, Operation, echo

IDEMPOTENCY_TTL_S = 86400


@dataclass(frozen=True)
class Claim:
    """The result of ``claim``: go ahead (``ok``), or why not."""

    outcome: Literal["ok", "missing", "final", "leased"]
    lease_ms: int = 0
    inflight: bool = False
    attempts: int = 0
    operation: Operation | None = None
    submitted_at: datetime | None = None


class JobStore:
    """Creates, reads and moves jobs; every transition is one atomic Redis call."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        result_ttl_s: int,
        pending_ttl_s: int,
        callback_watch_s: float = 300.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._callback_watch_ms = int(callback_watch_s * 1000)
        self._redis = client
        self._keys = keys
        self._result_ttl_s = result_ttl_s
        self._pending_ttl_s = pending_ttl_s
        self._clock = clock
        self._submit = scripts.register(client, "submit")
        self._claim = scripts.register(client, "claim")
        self._complete = scripts.register(client, "complete")
        self._reschedule = scripts.register(client, "reschedule")

    def submit_many(self, operations: list[Operation]) -> list[tuple[str, bool]]:
        """Queue every operation in one round trip: ``(job id, created)`` each."""
        if not operations:
            return []
        submitted = self._clock.now().isoformat()
        args: list[str | int] = [
            self._keys.job(""),
            self._keys.queue(OPERATIONS_QUEUE),
            self._pending_ttl_s,
            IDEMPOTENCY_TTL_S,
        ]
        for operation in operations:
            job_id = uuid.uuid4().hex
            idem = self._keys.idempotency(operation.idempotency_key) if operation.idempotency_key else ""
            message = build_message(EXECUTE_TASK, [job_id], queue=OPERATIONS_QUEUE)
            args += [idem, job_id, operation.model_dump_json(exclude_defaults=True), submitted, message]
        raw = self._submit(args=args)
        return [(raw[i].decode(), bool(raw[i + 1])) for i in range(0, len(raw), 2)]

    def operation(self, job_id: str) -> Operation:
        """The operation of a job."""
        raw = self._redis.hget(self._keys.job(job_id), JobField.op)
        if raw is None:
            raise JobNotFound(job_id)
        return Operation.model_validate_json(raw)

    def status(self, job_id: str) -> JobStatus:
        """The job as producers see it."""
        raw = self._redis.hgetall(self._keys.job(job_id))
        if not raw or JobField.op.encode() not in raw:
            raise JobNotFound(job_id)
        return to_status(job_id, {text(k): text(v) for k, v in raw.items()})

    def field(self, job_id: str, name: str) -> str | None:
        """One raw field of the job record."""
        value = self._redis.hget(self._keys.job(job_id), name)
        return text(value) if value is not None else None

    def claim(self, job_id: str, owner: str, *, lease_ms: int) -> Claim:
        """Take the job's lease and mark it running, unless finished or taken."""
        reply = self._claim(keys=[self._keys.job(job_id), self._keys.lease(job_id)], args=[owner, lease_ms])
        kind = text(reply[0])
        if kind == "leased":
            return Claim("leased", lease_ms=max(0, int(reply[1])))
        if kind == "ok":
            return Claim(
                "ok",
                inflight=reply[1] == b"1",
                attempts=int(reply[2] or 0),
                operation=Operation.model_validate_json(reply[3]),
                submitted_at=datetime.fromisoformat(text(reply[4])),
            )
        return Claim("missing" if kind == "missing" else "final")

    def lease_key(self, job_id: str) -> str:
        """The Redis key of the job's lease (renewed by a ``LeaseKeeper``)."""
        return self._keys.lease(job_id)

    def mark_sent(self, job_id: str) -> int:
        """Count an attempt whose request is about to leave; returns the attempt number."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(self._keys.job(job_id), JobField.attempts, 1)
            pipe.hset(self._keys.job(job_id), JobField.inflight, "1")
            attempts, _ = pipe.execute()
        return int(attempts)

    def complete(
        self,
        job_id: str,
        owner: str,
        *,
        succeeded: bool,
        response: ApiResponse | None,
        error: ErrorInfo | None,
        callback: bool,
    ) -> bool:
        """Finish the job (once) and queue its callback; False if already finished."""
        message = build_message(DELIVER_TASK, [job_id, 1], queue=CALLBACKS_QUEUE) if callback else ""
        keys = [
            self._keys.job(job_id),
            self._keys.lease(job_id),
            self._keys.queue(CALLBACKS_QUEUE),
            self._keys.stats,
            self._keys.callbacks_watch,
        ]
        args: list[str | int] = [
            owner,
            "succeeded" if succeeded else "failed",
            response.model_dump_json() if response else "",
            error.model_dump_json() if error else "",
            self._clock.now().isoformat(),
            self._result_ttl_s,
            message,
            self._callback_watch_ms,
            job_id,
        ]
        return int(self._complete(keys=keys, args=args)) == 1

    def reschedule(
        self,
        job_id: str,
        owner: str,
        *,
        delay_s: float,
        status: Literal["queued", "retrying"] | None,
        error: ErrorInfo | None = None,
        response: ApiResponse | None = None,
    ) -> bool:
        """Park the job in the due set for ``delay_s`` and release its lease."""
        member = due_member(self._keys, EXECUTE_TASK, [job_id], queue=OPERATIONS_QUEUE)
        keys = [self._keys.job(job_id), self._keys.lease(job_id), self._keys.due]
        args: list[str | int] = [
            owner,
            status or "",
            error.model_dump_json() if error else "",
            int(delay_s * 1000),
            member,
            response.model_dump_json() if response else "",
        ]
        return int(self._reschedule(keys=keys, args=args)) == 1


def to_status(job_id: str, fields: dict[str, str]) -> JobStatus:
    """Build a ``JobStatus`` from a job hash's decoded fields."""
    operation = Operation.model_validate_json(fields[JobField.op])
    finished = fields.get(JobField.finished_at)
    response, error = fields.get(JobField.response), fields.get(JobField.error)
    return JobStatus(
        id=job_id,
        status=fields.get(JobField.status, "queued"),
        operation=echo(operation),
        response=ApiResponse.model_validate_json(response) if response else None,
        error=ErrorInfo.model_validate_json(error) if error else None,
        attempts=int(fields.get(JobField.attempts, 0)),
        submitted_at=datetime.fromisoformat(fields[JobField.submitted_at]),
        finished_at=datetime.fromisoformat(finished) if finished else None,
    )
