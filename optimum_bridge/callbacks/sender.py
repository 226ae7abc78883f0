"""Delivering callbacks: their own retry schedule, dead letters and replay (signed by ``callbacks.signing``).

A job's callback is first delivered by the worker that finished the job, right
after (``deliver_held``; ``lua/complete.lua`` held it back from the queue), with
a short timeout: no second task, no second claim when the receiver answers at
once. A receiver that did not answer in time gets it from the delivery path, a
task of its own on its own queue with the full timeout, so a slow receiver
never holds an API slot for long; a failed delivery is retried there too.

The body is the ``CallbackEvent`` of spec §6; the ``webhook-id`` is stable per
job (receivers can de-duplicate) and the signature is recomputed at every
attempt with a fresh timestamp. After the
last scheduled retry the callback lands in the dead-letter hash, from which
``replay`` queues it again.

Through ``BRIDGE_CALLBACK_PROXY_URL`` the URL is still resolved and checked
just before each POST, but the request names the host (the proxy connects,
and a TLS certificate is verified against the name), so the proxy's own DNS
answer is the one used: see the README's "Proxies" for what that leaves to
the proxy.
"""

from __future__ import annotations

import logging
import uuid

import httpx

from optimum_bridge.callbacks.deliveries import BATCH, DeliveryStore
from optimum_bridge.callbacks.signing import message_id, sign
from optimum_bridge.callbacks.ssrf import Target, resolve_pinned
from optimum_bridge.clock import SYSTEM_CLOCK, Clock, isoformat
from optimum_bridge.errors import CallbackURLRefused
from optimum_bridge.jobs.batches import to_batch_status
from optimum_bridge.jobs.status import to_status
from optimum_bridge.keys import JobField
from optimum_bridge.process.replicas import NotReplicated
from optimum_bridge.schemas import BatchEvent, CallbackEvent, JobStatus, Operation

log = logging.getLogger(__name__)

#: A callback held because its job's state is not on the replicas yet is tried again this soon.
NOT_REPLICATED_DELAY_S = 1.0

#: Longest the first delivery made by the worker that finished the job waits for the receiver (less
#: when ``BRIDGE_CALLBACK_TIMEOUT_S`` is): a slower receiver gets the callback from the delivery path.
FIRST_DELIVERY_TIMEOUT_S = 2.0

#: Seconds to wait before each retry of a failed delivery (spec §6).
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000)


def pinned_request(
    http: httpx.Client, target: Target, *, content: bytes, headers: dict[str, str], pin: bool = True
) -> httpx.Request:
    """A POST to ``target`` that connects to the address that was checked, keeping Host and the TLS name
    (``pin=False``: to the host by name, for a proxy to connect to)."""
    request = http.build_request("POST", target.url, content=content, headers=headers)
    if pin and target.address is not None:
        request.url = request.url.copy_with(host=target.address)
        request.headers["host"] = target.host if request.url.port is None else f"{target.host}:{request.url.port}"
        request.extensions["sni_hostname"] = target.host
    return request


def dead_letter(subject: str, url: str, attempts: int, reason: str, *, failed_at: str) -> dict[str, object]:
    """The record kept in the dead-letter list (replayable, signed again at delivery)."""
    owner = {"batch_id": subject.removeprefix(BATCH)} if subject.startswith(BATCH) else {"job_id": subject}
    return {
        **owner,
        "subject": subject,
        "url": url,
        "reason": reason,
        "attempts": attempts,
        "webhook_id": message_id(subject),
        "signature_scheme": "standard-webhooks-v1",
        "failed_at": failed_at,
    }


def unsigned_letter(subject: str, attempts: int, reason: str) -> dict[str, object]:
    """A dead letter for a callback that could not even be signed (no secret configured)."""
    return dead_letter(subject, "", attempts, reason, failed_at=isoformat(SYSTEM_CLOCK.now()))


class CallbackSender:
    """Delivers one job's callback: sign, POST, and settle (retry, dead letter) through ``DeliveryStore``."""

    def __init__(
        self,
        deliveries: DeliveryStore,
        http: httpx.Client,
        *,
        key: bytes,
        allow_private: bool,
        schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
        lease_ms: int = 60_000,
        proxied: bool = False,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._deliveries = deliveries
        self._proxied = proxied
        self._http = http
        self._key = key
        self._allow_private = allow_private
        self._schedule = schedule
        self._lease_ms = lease_ms
        self._clock = clock

    def __repr__(self) -> str:
        options = f"allow_private={self._allow_private}, proxied={self._proxied}"
        return f"CallbackSender({options}, schedule={self._schedule})"

    def deliver(self, subject: str, attempt: int) -> str:
        """Attempt delivery number ``attempt`` (1-based) of a job's or a batch's callback; returns what happened."""
        owner = uuid.uuid4().hex
        try:
            claim = self._deliveries.claim(subject, owner, lease_ms=self._lease_ms)
        except NotReplicated as exc:  # the job's state may not survive a failover yet: not sent now
            log.warning("%s: callback held: %s", _name(subject), exc)
            self._deliveries.settle(subject, owner, "later", next_attempt=attempt, delay_s=NOT_REPLICATED_DELAY_S)
            return "later"
        if claim.outcome == "leased":  # another worker is on it, or died on it: look again later
            self._deliveries.settle(subject, "", "later", next_attempt=attempt, delay_s=claim.lease_ms / 1000 + 0.5)
            return "leased"
        if claim.outcome != "ok":
            log.info("callback for %s: %s, nothing to do", subject, claim.outcome)
            return "missing" if claim.outcome == "missing" else "duplicate"
        try:
            return self._attempt(subject, owner, attempt, claim.fields)
        except BaseException:
            self._deliveries.settle(subject, owner, "later", next_attempt=attempt, delay_s=self._retry_delay(attempt))
            raise

    @property
    def hold_ms(self) -> int:
        """How long a callback held for ``deliver_held`` waits, more than a queued one, before the
        callbacks watch queues it again (its worker died before settling it)."""
        return self._lease_ms

    def deliver_held(self, subject: str, fields: dict[str, str] | None) -> str:
        """Attempt 1 of a job's callback by the worker that finished the job (``JobStore.finish`` held
        it for it: no other delivery is made meanwhile), built from the finished job's ``fields``
        (None: its state is not on the replicas yet, so the delivery path sends it once it is). A receiver that
        does not answer within ``FIRST_DELIVERY_TIMEOUT_S`` gets it from the delivery path, attempt 1
        again with the full timeout; one that answered other than 2xx, from its retries."""
        owner = ""  # held by no lease
        if fields is None:
            self._deliveries.settle(subject, owner, "later", next_attempt=1, delay_s=NOT_REPLICATED_DELAY_S)
            return "later"
        try:
            return self._attempt(subject, owner, 1, fields, first=True)
        except Exception:
            log.exception("%s: first callback delivery failed; left to the delivery path", _name(subject))
            return self.hand_over(subject)

    def hand_over(self, subject: str) -> str:
        """A held callback goes to the delivery path at once (its queue: attempt 1, full timeout)."""
        self._deliveries.settle(subject, "", "queue", next_attempt=1)
        return "queued"

    def _attempt(self, subject: str, owner: str, attempt: int, fields: dict[str, str], *, first: bool = False) -> str:
        url, body = self.event(subject, fields)
        if url is None:
            self._deliveries.settle(subject, owner, "delivered")
            return "duplicate"
        try:
            target = resolve_pinned(url, allow_private=self._allow_private)
        except CallbackURLRefused as exc:
            return self._dead(subject, owner, url, attempt, str(exc))
        reason, slow = self._post(message_id(subject), body, target, first=first)
        if slow:  # no answer in the first delivery's short time: the delivery path, attempt 1 again
            log.info("%s: callback receiver slow (%s); handed to the delivery path", _name(subject), reason)
            self._deliveries.settle(subject, owner, "queue", next_attempt=attempt)
            return "queued"
        if reason is None:
            self._deliveries.settle(subject, owner, "delivered")
            log.info("%s: callback delivered (attempt %d)", _name(subject), attempt)
            return "delivered"
        if attempt > len(self._schedule):
            return self._dead(subject, owner, url, attempt, reason)
        delay = self._retry_delay(attempt)
        log.warning("%s: callback attempt %d failed (%s); retry in %ss", _name(subject), attempt, reason, delay)
        self._deliveries.settle(subject, owner, "retry", next_attempt=attempt + 1, delay_s=delay)
        return "retrying"

    def _retry_delay(self, attempt: int) -> float:
        return self._schedule[min(attempt, len(self._schedule)) - 1] if self._schedule else 60.0

    def event(self, subject: str, fields: dict[str, str]) -> tuple[str | None, bytes]:
        """The callback URL (None: no callback) and body of a job's or a batch's outcome."""
        stamp = isoformat(self._clock.now())
        if subject.startswith(BATCH):
            batch = to_batch_status(subject.removeprefix(BATCH), fields)
            return fields.get("callback"), BatchEvent(timestamp=stamp, data=batch).model_dump_json().encode()
        operation = Operation.model_validate_json(fields[JobField.op])
        url = str(operation.callback.url) if operation.callback is not None else None
        return url, self.body(to_status(subject, fields))

    def body(self, status: JobStatus) -> bytes:
        """The callback body for a job's status."""
        kinds = {"succeeded": "operation.succeeded", "cancelled": "operation.cancelled"}
        kind = kinds.get(status.status, "operation.failed")
        event = CallbackEvent(type=kind, timestamp=isoformat(self._clock.now()), data=status)
        return event.model_dump_json().encode()

    def _post(self, webhook_id: str, body: bytes, target: Target, *, first: bool = False) -> tuple[str | None, bool]:
        """Sign and POST: why it failed (None: delivered), and whether a ``first`` delivery timed out."""
        timestamp = int(self._clock.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "optimum-bridge",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, webhook_id, timestamp, body),
        }
        request = pinned_request(self._http, target, content=body, headers=headers, pin=not self._proxied)
        configured = self._http.timeout.read
        first = first and (configured is None or configured > FIRST_DELIVERY_TIMEOUT_S)  # else a full attempt
        if first:
            request.extensions["timeout"] = httpx.Timeout(FIRST_DELIVERY_TIMEOUT_S).as_dict()
        try:
            answer = self._http.send(request, follow_redirects=False)
        except httpx.TimeoutException as exc:
            return f"receiver unreachable: {type(exc).__name__}", first
        except httpx.HTTPError as exc:
            return f"receiver unreachable: {type(exc).__name__}", False
        if 200 <= answer.status_code < 300:
            return None, False
        return f"receiver answered {answer.status_code}", False

    def _dead(self, subject: str, owner: str, url: str, attempts: int, reason: str) -> str:
        record = dead_letter(subject, url, attempts, reason, failed_at=isoformat(self._clock.now()))
        self._deliveries.settle(subject, owner, "dead", dead_letter=record)
        log.error("%s: callback dead-lettered after %d attempts: %s", _name(subject), attempts, reason)
        return "dead"


def _name(subject: str) -> str:
    """``job <id>`` or ``batch <id>``, for log lines."""
    return subject.replace(BATCH, "batch ", 1) if subject.startswith(BATCH) else f"job {subject}"
