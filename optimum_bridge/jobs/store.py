"""Job records in Redis and every change of their state, each one atomic (the scripts are in ``lua/``).

A job is a hash (``keys.job``): the operation, its state, lane and place,
attempts, the last answer and error. ``submit_many`` creates jobs in their
priority lanes in one Lua call per batch, honouring idempotency keys (its
steps, and those of the other reads and controls a producer makes, are
``jobs.steps``, shared with the asyncio client). Then
the scheduler gives a job a slot and its message (``quota.dispatcher``), and a
worker runs it: the steps of a run (claim, mark sent, finish, reschedule) are
``jobs.running.JobRuns``, which ``JobStore`` has too.
"""

from __future__ import annotations

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.errors import JobNotFound
from optimum_bridge.jobs.running import JobRuns
from optimum_bridge.jobs.steps import ControlOutcome, JobSteps
from optimum_bridge.keys import JobField, Keys, text
from optimum_bridge.process.replicas import UNREPLICATED, Replicas
from optimum_bridge.schemas import JobStatus, Operation
from optimum_bridge.steps import SyncDriver


class JobStore(JobRuns):
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
        replicas: Replicas = UNREPLICATED,
    ) -> None:
        super().__init__(
            client, keys, result_ttl_s=result_ttl_s, callback_watch_s=callback_watch_s, clock=clock, replicas=replicas
        )
        self._pending_ttl_s = pending_ttl_s
        self.steps = JobSteps(keys, result_ttl_s, pending_ttl_s, clock)
        self._run = SyncDriver(client, replicas)

    def submit_many(self, operations: list[Operation], *, batch_key: str = "") -> list[tuple[str, bool]]:
        """Put every operation in its lane in one round trip: ``(job id, created)`` each."""
        return self._run(self.steps.submit_many(operations, batch_key=batch_key))

    def operation(self, job_id: str) -> Operation:
        """The operation of a job."""
        raw = self._redis.hget(self._keys.job(job_id), JobField.op)
        if raw is None:
            raise JobNotFound(job_id)
        return Operation.model_validate_json(raw)

    def fields(self, job_id: str) -> dict[str, str]:
        """The job hash, decoded (``JobNotFound`` when unknown or expired)."""
        return self._run(self.steps.fields(job_id))

    def shown(self, job_id: str) -> dict[str, str]:
        """The fields as producers see them (``JobSteps.shown``)."""
        return self._run(self.steps.shown(job_id))

    def status(self, job_id: str) -> JobStatus:
        """The job as producers see it (without its forecast: see ``quota.forecast.Forecaster``)."""
        return self._run(self.steps.status(job_id))

    def field(self, job_id: str, name: str) -> str | None:
        """One raw field of the job record."""
        value = self._redis.hget(self._keys.job(job_id), name)
        return text(value) if value is not None else None

    def cancel(self, job_ids: list[str]) -> list[ControlOutcome]:
        """Cancel the jobs that have not started their call: ``cancelled``, ``running``, ``final`` or ``missing``."""
        return self._run(self.steps.cancel(job_ids))

    def reprioritize(self, job_id: str, priority: str) -> ControlOutcome:
        """Move a waiting job to ``priority``'s lane, keeping its age: ``moved``, ``running``, ``final``..."""
        return self._run(self.steps.reprioritize(job_id, priority))
