"""The producer's side of the job records, as steps (``optimum_bridge.steps``): submit, read, cancel, reprioritize.

``JobStore`` runs them on a blocking client, ``AsyncBridgeClient`` on an
asyncio one: the same keys, arguments, scripts (``lua/submit.lua``,
``cancel.lua``, ``reprioritize.lua``) and parsing for both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from optimum_bridge.clock import SYSTEM_CLOCK, Clock, epoch_ms_ceil
from optimum_bridge.errors import JobNotFound
from optimum_bridge.jobs.coalesce import read_digest
from optimum_bridge.jobs.status import shown_status, to_status
from optimum_bridge.keys import RECENT_JOBS, RECENT_JOBS_TRIM_PERIOD, JobField, Keys, text
from optimum_bridge.schemas import WAITING_STATES, ErrorInfo, JobStatus, Operation
from optimum_bridge.steps import Command, Script, Steps

IDEMPOTENCY_TTL_S = 86400

ControlOutcome = Literal["cancelled", "moved", "running", "final", "missing"]


@dataclass(frozen=True)
class JobSteps:
    """Builds the steps of a producer's job operations from the prefix, the TTLs and the clock."""

    keys: Keys
    result_ttl_s: int
    pending_ttl_s: int
    clock: Clock = field(default=SYSTEM_CLOCK)

    def submit_many(self, operations: list[Operation], *, batch_key: str = "") -> Steps[list[tuple[str, bool]]]:
        """Put every operation in its lane in one round trip: ``(job id, created)`` each."""
        if not operations:
            return []
        raw = yield Script("submit", (), self.submit_args(operations, batch_key=batch_key), replicated=True)
        return [(text(raw[i]), bool(raw[i + 1])) for i in range(0, len(raw), 2)]

    def submit_args(self, operations: list[Operation], *, batch_key: str) -> list[str | int]:
        """``lua/submit.lua``'s arguments: the shared ones, then 11 per operation."""
        keys = self.keys
        submitted = self.clock.now().isoformat()
        args: list[str | int] = [
            keys.job_prefix,
            keys.lane_prefix,
            keys.seq_prefix,
            self.pending_ttl_s,
            IDEMPOTENCY_TTL_S,
            batch_key,
            keys.delayed(""),
            keys.recent_prefix,
            RECENT_JOBS,
            keys.followers_prefix,
            keys.callbacks_watch,
            self.result_ttl_s,
            keys.stats,
            keys.ready,
            keys.wake,
            RECENT_JOBS_TRIM_PERIOD,
            keys.limiter_prefix,
        ]
        for operation in operations:
            idem = keys.idempotency(operation.idempotency_key) if operation.idempotency_key else ""
            op = operation.model_dump_json(exclude_defaults=True)
            not_before = "" if operation.not_before is None else epoch_ms_ceil(operation.not_before)
            digest = read_digest(operation)
            read = keys.read(operation.account, digest) if digest else ""
            args += [idem, uuid.uuid4().hex, op, submitted, operation.priority, operation.account, not_before]
            has_callback = int(operation.callback is not None)
            args += [read, int(operation.coalesce), int(operation.max_age_s * 1000), has_callback]
        return args

    def fields(self, job_id: str) -> Steps[dict[str, str]]:
        """The job hash, decoded (``JobNotFound`` when unknown or expired)."""
        raw = yield Command("HGETALL", (self.keys.job(job_id),))
        if not raw or JobField.op.encode() not in raw:
            raise JobNotFound(job_id)
        return {text(k): text(v) for k, v in raw.items()}

    def shown(self, job_id: str) -> Steps[dict[str, str]]:
        """The fields as producers see them: a job waiting on another's call (spec §13) is running,
        from that call's start, while the call is."""
        fields = yield from self.fields(job_id)
        leader, status = fields.get(JobField.coalesced_with), fields.get(JobField.status, "queued")
        if not leader or status not in WAITING_STATES:
            return fields
        reply = yield Command("HMGET", (self.keys.job(leader), JobField.status, JobField.started_at))
        call_status, started_at = reply
        if shown_status(status, text(call_status) if call_status else None) == status:
            return fields
        shown = {**fields, JobField.status: "running"}
        if started_at is not None:  # the call's claim comes just before it is sent
            shown[JobField.started_at] = text(started_at)
        return shown

    def status(self, job_id: str) -> Steps[JobStatus]:
        """The job as producers see it (without its forecast: see ``quota.forecast``)."""
        return to_status(job_id, (yield from self.shown(job_id)))

    def cancel(self, job_ids: list[str], *, error: ErrorInfo | None = None) -> Steps[list[ControlOutcome]]:
        """Cancel the jobs that have not started their call: ``cancelled``, ``running``, ``final`` or ``missing``.

        ``error``: why, recorded on each cancelled job (a removed account's, spec §12a)."""
        if not job_ids:
            return []
        keys = self.keys
        args: list[str | int] = [
            keys.job_prefix,
            keys.lane_prefix,
            keys.delayed(""),
            self.clock.now().isoformat(),
            self.result_ttl_s,
            keys.callbacks_watch,
            keys.followers_prefix,
            keys.stats,
            error.model_dump_json() if error is not None else "",
            *job_ids,
        ]
        outcomes = yield Script("cancel", (keys.dispatched, keys.ready, keys.wake), args)
        return [text(outcome) for outcome in outcomes]  # type: ignore[misc]  # the script's documented outcomes

    def reprioritize(self, job_id: str, priority: str) -> Steps[ControlOutcome]:
        """Move a waiting job to ``priority``'s lane, keeping its age: ``moved``, ``running``, ``final``..."""
        keys = self.keys
        args = [keys.lane_prefix, priority, job_id, keys.job_prefix, keys.followers_prefix]
        reply = yield Script("reprioritize", (keys.job(job_id),), args)
        return text(reply)  # type: ignore[return-value]  # one of the script's documented outcomes
