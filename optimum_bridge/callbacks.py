"""Signed callbacks (Standard Webhooks) with their own retry schedule and dead letters.

A callback is delivered by its own task on its own queue, so a slow receiver
never holds an API slot. The body is the ``CallbackEvent`` of spec §6; the
``webhook-id`` is stable per job (receivers can de-duplicate) and the
signature is recomputed at every attempt with a fresh timestamp. After the
last scheduled retry the callback lands in the dead-letter hash, from which
``replay`` queues it again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid

import httpx
import redis

from .clock import SYSTEM_CLOCK, Clock, isoformat
from .errors import CallbackURLRefused, JobNotFound
from .jobs import JobStore
from .keys import CALLBACKS_QUEUE, Keys, text
from .messages import DELIVER_TASK, build_message, due_member
from .metrics import Metrics
from .schemas import CallbackEvent
from .urls import Target, resolve_pinned

log = logging.getLogger(__name__)

#: Seconds to wait before each retry of a failed delivery (spec §6).
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.ts.body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def message_id(job_id: str) -> str:
    """The ``webhook-id`` of a job's callback: the same for every retry."""
    return f"msg_{job_id}"


def pinned_request(http: httpx.Client, target: Target, *, content: bytes, headers: dict[str, str]) -> httpx.Request:
    """A POST to ``target`` that connects to the address that was checked, keeping Host and the TLS name."""
    request = http.build_request("POST", target.url, content=content, headers=headers)
    if target.address is not None:
        request.url = request.url.copy_with(host=target.address)
        request.headers["host"] = target.host if request.url.port is None else f"{target.host}:{request.url.port}"
        request.extensions["sni_hostname"] = target.host
    return request


class CallbackSender:
    """Delivers one job's callback; retries, dead-letters and replays."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        jobs: JobStore,
        http: httpx.Client,
        *,
        key: bytes,
        metrics: Metrics,
        allow_private: bool,
        schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
        lease_ms: int = 60_000,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._jobs = jobs
        self._http = http
        self._key = key
        self._metrics = metrics
        self._allow_private = allow_private
        self._schedule = schedule
        self._lease_ms = lease_ms
        self._clock = clock

    def __repr__(self) -> str:
        return f"CallbackSender(allow_private={self._allow_private}, schedule={self._schedule})"

    def deliver(self, job_id: str, attempt: int) -> str:
        """Attempt delivery number ``attempt`` (1-based); returns what happened."""
        owner = uuid.uuid4().hex
        lease = self._keys.lease(f"cb:{job_id}")
        if not self._redis.set(lease, owner, nx=True, px=self._lease_ms):
            self._later(job_id, attempt, self._lease_ms / 1000)
            return "leased"
        try:
            return self._deliver(job_id, attempt)
        finally:
            if self._redis.get(lease) == owner.encode():
                self._redis.delete(lease)

    def _deliver(self, job_id: str, attempt: int) -> str:
        try:
            state = self._jobs.field(job_id, "cb")
            operation = self._jobs.operation(job_id)
        except JobNotFound:
            log.warning("callback for job %s: job expired, dropped", job_id)
            return "missing"
        if state in ("delivered", "dead") or operation.callback is None:
            return "duplicate"
        url = str(operation.callback.url)
        try:
            target = resolve_pinned(url, allow_private=self._allow_private)
        except CallbackURLRefused as exc:
            return self._dead(job_id, url, attempt, str(exc))
        reason = self._post(job_id, target)
        if reason is None:
            self._redis.hset(self._keys.job(job_id), "cb", "delivered")
            self._metrics.incr("callbacks:delivered")
            log.info("job %s: callback delivered (attempt %d)", job_id, attempt)
            return "delivered"
        self._metrics.incr("callbacks:failed")
        if attempt > len(self._schedule):
            return self._dead(job_id, url, attempt, reason)
        delay = self._schedule[attempt - 1]
        log.warning("job %s: callback attempt %d failed (%s); retry in %ss", job_id, attempt, reason, delay)
        self._later(job_id, attempt + 1, delay)
        return "retrying"

    def body(self, job_id: str) -> bytes:
        """The callback body for the job's current state."""
        status = self._jobs.status(job_id)
        kind = "operation.succeeded" if status.status == "succeeded" else "operation.failed"
        event = CallbackEvent(type=kind, timestamp=isoformat(self._clock.now()), data=status)
        return event.model_dump_json().encode()

    def _post(self, job_id: str, target: Target) -> str | None:
        body = self.body(job_id)
        timestamp = int(self._clock.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "optimum-bridge",
            "webhook-id": message_id(job_id),
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, message_id(job_id), timestamp, body),
        }
        request = pinned_request(self._http, target, content=body, headers=headers)
        try:
            answer = self._http.send(request, follow_redirects=False)
        except httpx.HTTPError as exc:
            return f"receiver unreachable: {type(exc).__name__}"
        if 200 <= answer.status_code < 300:
            return None
        return f"receiver answered {answer.status_code}"

    def _later(self, job_id: str, attempt: int, delay_s: float) -> None:
        member = due_member(self._keys, DELIVER_TASK, [job_id, attempt], queue=CALLBACKS_QUEUE)
        seconds, micros = self._redis.time()  # due times are on the Redis clock
        self._redis.zadd(self._keys.due, {member: int(seconds) * 1000 + int(micros) // 1000 + int(delay_s * 1000)})

    def _dead(self, job_id: str, url: str, attempts: int, reason: str) -> str:
        record = {
            "job_id": job_id,
            "url": url,
            "reason": reason,
            "attempts": attempts,
            "webhook_id": message_id(job_id),
            "signature_scheme": "standard-webhooks-v1",
            "failed_at": isoformat(self._clock.now()),
        }
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.dead_letters, job_id, json.dumps(record))
            pipe.hset(self._keys.job(job_id), "cb", "dead")
            pipe.execute()
        self._metrics.incr("callbacks:dead")
        log.error("job %s: callback dead-lettered after %d attempts: %s", job_id, attempts, reason)
        return "dead"

    def dead_letters(self) -> list[dict[str, object]]:
        """Every dead letter, oldest first."""
        rows = [json.loads(v) for v in self._redis.hvals(self._keys.dead_letters)]
        return sorted(rows, key=lambda row: str(row["failed_at"]))

    def replay(self, job_ids: list[str] | None = None) -> list[str]:
        """Queue dead-lettered callbacks again (all, or the given jobs)."""
        ids = job_ids or [text(k) for k in self._redis.hkeys(self._keys.dead_letters)]
        replayed = []
        for job_id in ids:
            if not self._redis.hdel(self._keys.dead_letters, job_id):
                continue
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self._keys.job(job_id), "cb", "pending")
                pipe.lpush(
                    self._keys.queue(CALLBACKS_QUEUE), build_message(DELIVER_TASK, [job_id, 1], queue=CALLBACKS_QUEUE)
                )
                pipe.execute()
            replayed.append(job_id)
        return replayed
