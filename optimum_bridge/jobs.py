"""Job records in Redis and every change of their state, each one atomic.

A job is a hash (``keys.job``): the operation, its state, attempts, the last
answer and error. ``submit`` creates jobs and queues their messages in one
Lua call per batch, honouring idempotency keys. ``claim`` takes a per-job
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

from .clock import SYSTEM_CLOCK, Clock
from .errors import JobNotFound
from .keys import CALLBACKS_QUEUE, OPERATIONS_QUEUE, Keys, text
from .messages import DELIVER_TASK, EXECUTE_TASK, build_message, due_member
from .schemas import ApiResponse, ErrorInfo, JobStatus, Operation, echo

IDEMPOTENCY_TTL_S = 86400

_SUBMIT = """
local job_prefix, queue = ARGV[1], ARGV[2]
local ttl, idem_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 5 do
  local idem, jid, op, submitted, msg = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local existing = false
  if idem ~= '' then
    local prev = redis.call('GET', idem)
    if prev and redis.call('EXISTS', job_prefix .. prev) == 1 then existing = prev end
  end
  if existing then
    table.insert(out, existing)
    table.insert(out, 0)
  else
    if idem ~= '' then redis.call('SET', idem, jid, 'EX', idem_ttl) end
    local key = job_prefix .. jid
    redis.call('HSET', key, 'op', op, 'status', 'queued', 'attempts', 0, 'submitted_at', submitted)
    redis.call('EXPIRE', key, ttl)
    redis.call('LPUSH', queue, msg)
    table.insert(out, jid)
    table.insert(out, 1)
  end
end
return out
"""

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing', 0, 0} end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'succeeded' or status == 'failed' then return {'final', 0, 0} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return {'leased', redis.call('PTTL', KEYS[2]), 0}
end
redis.call('HSET', KEYS[1], 'status', 'running')
local fields = redis.call('HMGET', KEYS[1], 'inflight', 'attempts', 'op', 'submitted_at')
return {'ok', fields[1] or '0', tonumber(fields[2]), fields[3], fields[4]}
"""

_COMPLETE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'response', ARGV[3], 'error', ARGV[4],
           'finished_at', ARGV[5], 'inflight', '0')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('HINCRBY', KEYS[4], 'jobs:' .. ARGV[2], 1)
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'cb', 'pending')
  redis.call('LPUSH', KEYS[3], ARGV[7])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[8]), ARGV[9])
end
return 1
"""

_RESCHEDULE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' then return 0 end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'status', ARGV[2]) end
redis.call('HSET', KEYS[1], 'inflight', '0')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'response', ARGV[6]) end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[5])
return 1
"""


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
        self._submit = client.register_script(_SUBMIT)
        self._claim = client.register_script(_CLAIM)
        self._complete = client.register_script(_COMPLETE)
        self._reschedule = client.register_script(_RESCHEDULE)

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
        raw = self._redis.hget(self._keys.job(job_id), "op")
        if raw is None:
            raise JobNotFound(job_id)
        return Operation.model_validate_json(raw)

    def status(self, job_id: str) -> JobStatus:
        """The job as producers see it."""
        raw = self._redis.hgetall(self._keys.job(job_id))
        if not raw or b"op" not in raw:
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
            pipe.hincrby(self._keys.job(job_id), "attempts", 1)
            pipe.hset(self._keys.job(job_id), "inflight", "1")
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
    operation = Operation.model_validate_json(fields["op"])
    finished = fields.get("finished_at")
    return JobStatus(
        id=job_id,
        status=fields.get("status", "queued"),
        operation=echo(operation),
        response=ApiResponse.model_validate_json(fields["response"]) if fields.get("response") else None,
        error=ErrorInfo.model_validate_json(fields["error"]) if fields.get("error") else None,
        attempts=int(fields.get("attempts", 0)),
        submitted_at=datetime.fromisoformat(fields["submitted_at"]),
        finished_at=datetime.fromisoformat(finished) if finished else None,
    )
