"""The Python way in (spec §7): ``BridgeClient.from_env().submit(...)``.

Producers need only Redis: submitting writes the job and its queue message in
one round trip per batch, and ``get``/``wait`` read the job record the workers
update. Callback URLs are checked here, at submission, and again at delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis
from pydantic import ValidationError

from .clock import SYSTEM_CLOCK, Clock
from .errors import BridgeError
from .jobs import JobStore
from .keys import Keys
from .runtime import redis_client
from .schemas import JobStatus, Operation, first_error
from .settings import Settings, load_settings
from .ssrf import check_callback_url

MAX_BATCH = 1000


class InvalidOperation(BridgeError):
    """An operation was refused; the message names the field."""


class BridgeClient:
    """Submit operations and read their outcome."""

    def __init__(self, settings: Settings, *, client: redis.Redis | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self._owns_redis = client is None
        self._redis = client or redis_client(settings)
        self._keys = Keys(settings.key_prefix)
        pending_ttl = int(settings.max_retry_duration_s) + settings.result_ttl_s
        self._jobs = JobStore(
            self._redis, self._keys, result_ttl_s=settings.result_ttl_s, pending_ttl_s=pending_ttl, clock=clock
        )
        self._clock = clock

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
        if op.callback is not None:
            try:
                check_callback_url(str(op.callback.url), allow_private=self.settings.callback_allow_private)
            except BridgeError as exc:
                raise InvalidOperation(str(exc)) from None
        return op

    def submit(self, operation: Operation | Mapping[str, Any]) -> str:
        """Queue one operation; returns its job id (the existing one for a repeated idempotency key)."""
        return self._jobs.submit_many([self.validate(operation)])[0][0]

    def submit_many(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[str]:
        """Queue operations, one Redis round trip per batch of up to 1,000; all are checked first."""
        return [job_id for job_id, _ in self.submit_many_detailed(operations)]

    def submit_many_detailed(self, operations: Iterable[Operation | Mapping[str, Any]]) -> list[tuple[str, bool]]:
        """Like ``submit_many``, with whether each job was created (False: idempotent repeat)."""
        checked = []
        for index, operation in enumerate(operations):
            try:
                checked.append(self.validate(operation))
            except InvalidOperation as exc:
                raise InvalidOperation(f"operations[{index}].{exc}") from None
        results: list[tuple[str, bool]] = []
        for start in range(0, len(checked), MAX_BATCH):
            results += self._jobs.submit_many(checked[start : start + MAX_BATCH])
        return results

    def get(self, job_id: str) -> JobStatus:
        """The job's current status (``JobNotFound`` when unknown or expired)."""
        return self._jobs.status(job_id)

    def wait(self, job_id: str, timeout: float, *, poll_s: float = 0.1) -> JobStatus:
        """Poll until the job is finished; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = self._clock.monotonic() + timeout
        while True:
            status = self.get(job_id)
            if status.finished:
                return status
            if self._clock.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {status.status} after {timeout}s")
            self._clock.sleep(min(poll_s, max(0.0, deadline - self._clock.monotonic())))
