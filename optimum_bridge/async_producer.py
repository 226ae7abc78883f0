"""The asyncio way in (spec §17): ``async with AsyncBridgeClient.from_env() as client: await client.submit(...)``.

The twin of ``BridgeClient`` on ``redis.asyncio``: the same methods, models
and errors, because both run ``ProducerSteps`` -- the same keys, Lua scripts
and parsing -- and differ only in the driver (``steps.AsyncDriver``; a
callback host's DNS lookup and the first build of an OpenAPI checker run in a
thread). ``wait`` reads no faster than the job can change
(``producer_steps.next_poll_s``), so a hundred concurrent waits on a slow
quota cost a few reads a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import redis.asyncio

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.process.redis import async_redis_client
from optimum_bridge.process.replicas import Replicas
from optimum_bridge.producer_steps import ProducerSteps, next_poll_s, timed_out
from optimum_bridge.quota.forecast import Backlog
from optimum_bridge.schemas import Batch, BatchStatus, Callback, JobStatus, Operation, Priority
from optimum_bridge.settings import Settings, load_settings
from optimum_bridge.steps import AsyncDriver

Finished = TypeVar("Finished", JobStatus, BatchStatus)


class AsyncBridgeClient:
    """Submit operations and read their outcome, from asyncio code."""

    def __init__(
        self, settings: Settings, *, client: redis.asyncio.Redis | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.settings = settings
        self._owns_redis = client is None
        self._redis = client or async_redis_client(settings)
        self._clock = clock
        self._steps = ProducerSteps(settings, clock=clock)
        self._run = AsyncDriver(self._redis, Replicas.of(settings))

    @classmethod
    def from_env(cls) -> AsyncBridgeClient:
        """A client configured from the environment (and ``.env``)."""
        return cls(load_settings())

    def __repr__(self) -> str:
        return f"AsyncBridgeClient(prefix={self.settings.key_prefix!r})"

    async def aclose(self) -> None:
        """Close the Redis connections (when the client opened them itself)."""
        if self._owns_redis:
            await self._redis.aclose()

    async def __aenter__(self) -> AsyncBridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def redis(self) -> redis.asyncio.Redis:
        """The Redis connection."""
        return self._redis

    async def validate(self, operation: Operation | Mapping[str, Any]) -> Operation:
        """The operation as a checked model, or ``InvalidOperation`` naming the field."""
        return await self._run(self._steps.validate(operation))

    async def submit(self, operation: Operation | Mapping[str, Any]) -> str:
        """Queue one operation; returns its job id (the existing one for a repeated idempotency key)."""
        return await self._run(self._steps.submit(operation))

    async def submit_many(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[str]:
        """Queue operations, one Redis round trip per batch of up to 1,000; all are checked first."""
        return [job_id for job_id, _ in await self.submit_many_detailed(operations)]

    async def submit_many_detailed(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[tuple[str, bool]]:
        """Like ``submit_many``, with whether each job was created (False: idempotent repeat)."""
        return await self._run(self._steps.submit_many(operations))

    async def get(self, job_id: str) -> JobStatus:
        """The job's current status, with its forecast while it waits (``JobNotFound`` when unknown or expired)."""
        return await self._run(self._steps.get(job_id))

    async def backlog(self, account: str) -> Backlog:
        """An account's lanes now, its next slot and when each lane's last job should start."""
        return await self._run(self._steps.forecast.backlog(account))

    async def cancel(self, job_id: str) -> JobStatus:
        """Cancel a job that has not started its call (``NotWaiting`` if it has, or is finished)."""
        return await self._run(self._steps.cancel(job_id))

    async def cancel_batch(self, batch_id: str) -> BatchStatus:
        """Cancel, in one step, every job of a batch that has not started its call."""
        return await self._run(self._steps.cancel_batch(batch_id))

    async def reprioritize(self, job_id: str, priority: Priority) -> JobStatus:
        """Move a waiting job to another lane, keeping its age there (``NotWaiting`` once it runs)."""
        return await self._run(self._steps.reprioritize(job_id, priority))

    async def submit_batch(
        self,
        operations: Iterable[Operation | Mapping[str, Any]],
        *,
        callback: Callback | Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Queue a batch (all checked first); one ``batch.completed`` callback when every job is final."""
        return await self._run(self._steps.submit_batch(operations, callback=callback, metadata=metadata))

    async def get_batch(self, batch_id: str) -> BatchStatus:
        """The batch's status and forecast (``BatchNotFound`` when unknown or expired)."""
        return await self._run(self._steps.batches.status(batch_id))

    async def batch_accounts(self, batch_id: str) -> list[str]:
        """The accounts of a batch's operations (``BatchNotFound`` when unknown or expired)."""
        return await self._run(self._steps.batches.accounts(batch_id))

    async def batch_jobs(self, batch_id: str) -> list[str]:
        """The batch's job ids, in submission order."""
        return await self._run(self._steps.batches.job_ids(batch_id))

    async def wait(self, job_id: str, timeout: float, *, poll_s: float = 0.1) -> JobStatus:
        """Read the job until it is finished; ``TimeoutError`` after ``timeout`` seconds."""
        return await self._poll(lambda: self.get(job_id), timeout=timeout, poll_s=poll_s)

    async def wait_batch(self, batch_id: str, timeout: float, *, poll_s: float = 0.25) -> BatchStatus:
        """Read the batch until every job of it is final; ``TimeoutError`` after ``timeout`` seconds."""
        return await self._poll(lambda: self.get_batch(batch_id), timeout=timeout, poll_s=poll_s)

    async def _poll(self, read: Callable[[], Awaitable[Finished]], *, timeout: float, poll_s: float) -> Finished:
        """``read()`` until what it reads is finished (paced by ``next_poll_s``); ``TimeoutError`` past ``timeout``."""
        deadline = self._clock.monotonic() + timeout
        while True:
            status = await read()
            if status.finished:
                return status
            left = deadline - self._clock.monotonic()
            if left <= 0:
                raise timed_out(status, timeout)
            await asyncio.sleep(min(left, next_poll_s(status, now=self._clock.now(), poll_s=poll_s)))
