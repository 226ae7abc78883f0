"""Batches (spec §11): many operations submitted together, followed together, and one callback at the end.

A batch is a hash (``keys.batch``): its total, its jobs' counts by state
(kept in step by every status change, ``lua/_prelude.lua``'s ``set_status``),
its metadata and callback URL, and its last place in each lane for the
forecast; its job ids are a list beside it, and its id enters each of its
accounts' bounded index of recent batches (``keys.recent_batches``). The batch hash is written before
its jobs, and sealed after them (``lua/batch_seal.lua``), so it can only
finish once every job is in. The job that makes it final queues the
``batch.completed`` callback in the same step (``lua/complete.lua``): once,
whatever failed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import redis
from pydantic import JsonValue

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.errors import JobNotFound
from optimum_bridge.jobs.steps import JobSteps
from optimum_bridge.jobs.store import JobStore
from optimum_bridge.keys import PRIORITIES, RECENT_BATCHES, Keys, text
from optimum_bridge.process.replicas import UNREPLICATED, Replicas
from optimum_bridge.quota.forecast import Forecaster, ForecastSteps
from optimum_bridge.schemas import Batch, BatchCounts, BatchStatus, Callback, Operation
from optimum_bridge.steps import Command, Pipeline, Script, Steps, SyncDriver

#: Operations written per Redis round trip.
CHUNK = 1000


class BatchNotFound(JobNotFound):
    """No batch with that id (unknown or expired)."""


def to_batch_status(batch_id: str, fields: dict[str, str]) -> BatchStatus:
    """A ``BatchStatus`` from a batch hash's decoded fields (without the forecast)."""
    counts = {state: max(0, int(fields.get(f"n:{state}", 0))) for state in BatchCounts.model_fields}
    finished = fields.get("finished_at")
    return BatchStatus(
        id=batch_id,
        status="done" if finished else "running",
        total=int(fields.get("total", 0)),
        counts=BatchCounts(**counts),
        metadata=json.loads(fields.get("metadata", "{}")),
        submitted_at=datetime.fromisoformat(fields["submitted_at"]),
        finished_at=datetime.fromisoformat(finished) if finished else None,
    )


@dataclass(frozen=True)
class BatchSteps:
    """Batches as steps (``optimum_bridge.steps``), for the blocking and the asyncio client alike."""

    keys: Keys
    jobs: JobSteps
    forecast: ForecastSteps
    result_ttl_s: int
    pending_ttl_s: int
    clock: Clock = field(default=SYSTEM_CLOCK)

    def create(
        self,
        operations: Sequence[Operation],
        *,
        callback: Callback | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Steps[Batch]:
        """Write the batch, then its jobs (one round trip per 1,000), then seal it."""
        batch_id = uuid.uuid4().hex
        keys, key = self.keys, self.keys.batch(batch_id)
        accounts = sorted({operation.account for operation in operations})
        now = self.clock.now()
        fields = ["total", len(operations), "metadata", json.dumps(metadata or {})]
        fields += ["submitted_at", now.isoformat(), "accounts", ",".join(accounts)]
        if callback is not None:
            fields += ["callback", str(callback.url)]
        writes = [Command("HSET", (key, *fields)), Command("EXPIRE", (key, self.pending_ttl_s))]
        for account in accounts:  # the bounded index /ui lists batches from
            recent = keys.recent_batches(account)
            writes.append(Command("ZADD", (recent, int(now.timestamp() * 1e6), batch_id)))
            writes.append(Command("ZREMRANGEBYRANK", (recent, 0, -(RECENT_BATCHES + 1))))
        yield Pipeline(tuple(writes))
        job_ids: list[str] = []
        created = 0
        for start in range(0, len(operations), CHUNK):
            chunk = list(operations[start : start + CHUNK])
            results = yield from self.jobs.submit_many(chunk, batch_key=key)
            job_ids += [job_id for job_id, _ in results]
            created += sum(1 for _, new in results if new)
        listed = (
            Command("RPUSH", (keys.batch_jobs(batch_id), *job_ids)),
            Command("EXPIRE", (keys.batch_jobs(batch_id), self.pending_ttl_s)),
        )
        yield Pipeline(listed, transaction=False)
        args: list[str | int] = [created, self.clock.now().isoformat(), self.result_ttl_s, batch_id]
        # The last write: its WAIT (BRIDGE_REDIS_MIN_REPLICAS) covers the batch's record and job list before it.
        yield Script("batch_seal", (key, keys.callbacks_watch), args, replicated=True)
        return Batch(id=batch_id, job_ids=job_ids)

    def fields(self, batch_id: str) -> Steps[dict[str, str]]:
        """The batch hash, decoded (``BatchNotFound`` when unknown or expired)."""
        raw = yield Command("HGETALL", (self.keys.batch(batch_id),))
        if not raw or b"submitted_at" not in raw:
            raise BatchNotFound(batch_id)
        return {text(k): text(v) for k, v in raw.items()}

    def status(self, batch_id: str) -> Steps[BatchStatus]:
        """The batch as producers see it, with its forecast while it runs."""
        fields = yield from self.fields(batch_id)
        status = to_batch_status(batch_id, fields)
        if status.finished:
            return status
        last = {p: fields[f"last:{p}"] for p in PRIORITIES if f"last:{p}" in fields}
        done_at = yield from self.forecast.batch_done(fields.get("accounts", "default").split(",")[0], last)
        return status.model_copy(update={"estimated_done_at": done_at})

    def accounts(self, batch_id: str) -> Steps[list[str]]:
        """The accounts of a batch's operations."""
        return (yield from self.fields(batch_id)).get("accounts", "default").split(",")

    def job_ids(self, batch_id: str) -> Steps[list[str]]:
        """The batch's job ids, in submission order."""
        return [text(job_id) for job_id in (yield Command("LRANGE", (self.keys.batch_jobs(batch_id), 0, -1)))]


class BatchStore:
    """Creates batches and reads their status (``BatchSteps`` on a blocking client)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        jobs: JobStore,
        forecaster: Forecaster,
        *,
        result_ttl_s: int,
        pending_ttl_s: int,
        clock: Clock = SYSTEM_CLOCK,
        replicas: Replicas = UNREPLICATED,
    ) -> None:
        self.steps = BatchSteps(keys, jobs.steps, forecaster.steps, result_ttl_s, pending_ttl_s, clock)
        self._run = SyncDriver(client, replicas)

    def create(
        self,
        operations: Sequence[Operation],
        *,
        callback: Callback | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Batch:
        """Write the batch, then its jobs (one round trip per 1,000), then seal it."""
        return self._run(self.steps.create(operations, callback=callback, metadata=metadata))

    def fields(self, batch_id: str) -> dict[str, str]:
        """The batch hash, decoded (``BatchNotFound`` when unknown or expired)."""
        return self._run(self.steps.fields(batch_id))

    def status(self, batch_id: str) -> BatchStatus:
        """The batch as producers see it, with its forecast while it runs."""
        return self._run(self.steps.status(batch_id))

    def accounts(self, batch_id: str) -> list[str]:
        """The accounts of a batch's operations."""
        return self._run(self.steps.accounts(batch_id))

    def job_ids(self, batch_id: str) -> list[str]:
        """The batch's job ids, in submission order."""
        return self._run(self.steps.job_ids(batch_id))
