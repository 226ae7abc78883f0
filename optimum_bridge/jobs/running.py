"""What a worker does to a job, each step one atomic Redis call (the scripts are in ``lua/``).

``claim`` takes a dispatched job for one worker, refusing stale messages (a
dispatch that is not the job's current one), finished jobs (a redelivery never
runs one again) and a slot that went by; ``mark_sent`` counts an attempt right
before its request leaves. ``finish`` moves a job to its final state once --
and queues its callback, and its batch's when it is the batch's last job, in
the same step -- and, asked to, takes the next job whose slot is free now for
the same thread (``TakeNext``: no message, no claim between two calls; issue
17). ``reschedule`` parks a job until its retry is due. ``JobStore`` has these
steps (``JobRuns``) beside those of producers and readers.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

import redis

from optimum_bridge.clock import Clock
from optimum_bridge.errors import Deferred
from optimum_bridge.jobs.outcomes import Claim, Completion, Taken, TakeNext
from optimum_bridge.keys import CALLBACKS_QUEUE, DELIVER_BATCH_TASK, DELIVER_TASK, Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.process.kombu import build_message, message_template
from optimum_bridge.process.replicas import NotOwned, NotReplicated, Replicas
from optimum_bridge.quota.rate import Quota
from optimum_bridge.schemas import ApiResponse, ErrorInfo, Operation

log = logging.getLogger(__name__)

#: A "call sent" record that did not reach its replicas: the call waits this long, back in its lane.
NOT_REPLICATED_DELAY_S = 1.0
#: Most due accounts a finishing thread looks at for a slot free now (the earliest due first).
TAKE_ACCOUNTS = 10


class JobRuns:
    """The steps of a job's run by a worker (``JobStore`` has them)."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        result_ttl_s: int,
        callback_watch_s: float,
        clock: Clock,
        replicas: Replicas,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._result_ttl_s = result_ttl_s
        self._callback_watch_ms = int(callback_watch_s * 1000)
        self._clock = clock
        self._replicas = replicas
        self._claim = scripts.register(client, "claim")
        self._complete = scripts.register(client, "complete")
        self._reschedule = scripts.register(client, "reschedule")
        self._mark_sent = scripts.register(client, "mark_sent")
        self._callback_template: tuple[str, str] | None = None  # built by the first finish: a worker's

    def claim(
        self, job_id: str, dispatch: int, owner: str, *, quota: Quota, account: str, lease_ms: int, send: bool = False
    ) -> Claim:
        """Take the job for this worker, if ``dispatch`` is its current one and its slot still holds.

        ``send``: the caller has its token and calls right after, so the claim also does what
        ``mark_sent`` does (one step instead of two), unless an earlier attempt may be in flight or
        the record must reach replicas first (``BRIDGE_REDIS_MIN_REPLICAS``: ``mark_sent`` waits).
        """
        sent_at = self._clock.now().isoformat() if send and self._replicas.required == 0 else ""
        keys = [
            self._keys.job(job_id),
            self._keys.leases,
            self._keys.dispatched,
            self._keys.running,
            self._keys.limiter_log(account),
            self._keys.limiter_state(account),
            self._keys.ready,
            self._keys.wake,
        ]
        args: list[str | int] = [
            owner,
            lease_ms,
            dispatch,
            quota.window_ms,
            quota.limit,
            self._keys.lane_prefix,
            job_id,
            account,
            sent_at,
        ]
        reply = self._claim(keys=keys, args=args)
        kind = text(reply[0])
        if kind == "leased":
            return Claim("leased", lease_ms=max(0, int(reply[1])))
        if kind != "ok":
            return Claim(kind)  # type: ignore[arg-type]  # one of the script's documented outcomes
        batch = text(reply[5])
        return Claim(
            "ok",
            inflight=reply[1] == b"1",
            attempts=int(reply[2] or 0),
            operation=Operation.model_validate_json(reply[3]),
            submitted_at=datetime.fromisoformat(text(reply[4])),
            batch_id=self._keys.batch_id(batch) if batch else None,
            sent=int(reply[6]) if int(reply[6]) >= 0 else None,
        )

    def mark_sent(self, job_id: str, dispatch: int, *, quota: Quota, account: str, owner: str | None = None) -> int:
        """Count an attempt whose request is about to leave; returns the attempt number.

        Raises ``Deferred`` (nothing sent, the slot given back) if starting now would break the
        account's window: a worker slowed down since its claim must not bunch calls at the API.
        With ``owner``, also when the job's lease is not ``owner``'s on the Redis that recorded
        it: redis-py retries a write on the primary a failover promoted, which may not have the
        claim (the job would run again elsewhere). With ``BRIDGE_REDIS_MIN_REPLICAS``, also when
        the record did not reach the replicas: a failover would forget the call was sent.
        """
        keys = [
            self._keys.job(job_id),
            self._keys.limiter_log(account),
            self._keys.limiter_state(account),
            self._keys.leases,
        ]
        args: list[str | int] = [
            f"{job_id}.{dispatch}",
            quota.window_ms,
            quota.limit,
            self._clock.now().isoformat(),
            owner or "",
            job_id,
        ]
        try:
            attempts = int(self._replicas.run(self._redis, self._mark_sent, keys=keys, args=args))
        except NotReplicated as exc:
            log.warning("job %s dispatch %d: not sent, back in its lane: %s", job_id, dispatch, exc)
            raise Deferred(NOT_REPLICATED_DELAY_S) from exc
        if attempts < 0:  # the claim is not on this Redis: the job is another worker's to run
            log.warning("job %s dispatch %d: not sent: %s", job_id, dispatch, NotOwned(f"{self._keys.leases} {job_id}"))
            raise Deferred(0.0)
        if attempts == 0:
            raise Deferred(0.0)
        return attempts

    def finish(
        self,
        job_id: str,
        owner: str,
        *,
        succeeded: bool,
        response: ApiResponse | None,
        error: ErrorInfo | None,
        callback: bool,
        batch_id: str | None = None,
        hold_ms: int | None = None,
        counts: tuple[str, ...] = (),
        take: TakeNext | None = None,
    ) -> Completion:
        """Finish the job (once) and queue its callback (and its batch's) in the same step; with
        ``hold_ms``, the job's callback is not queued but held for the caller, who
        makes its first delivery within that time (``Completion.fields``: what to send). ``counts``:
        the metrics of the call that decided it (``Metrics.call_counts``), added in the same step.
        ``take``: the calling thread, free again, takes the next job whose slot is free now, in the
        same step (``Completion.taken``; see ``lua/_serve.lua``'s ``take_next``)."""
        message = build_message(DELIVER_TASK, [job_id, 1], queue=CALLBACKS_QUEUE) if callback else ""
        batch_message = build_message(DELIVER_BATCH_TASK, [batch_id, 1], queue=CALLBACKS_QUEUE) if batch_id else ""
        keys = [
            self._keys.job(job_id),
            self._keys.leases,
            self._keys.queue(CALLBACKS_QUEUE),
            self._keys.stats,
            self._keys.callbacks_watch,
            self._keys.running,
            self._keys.ready,
            self._keys.wake,
            self._keys.quotas,
            self._keys.dispatched,
            self._keys.capacity,
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
            batch_message,
            batch_id or "",
            self._keys.job_prefix,
            self._keys.followers_prefix,
            *self._followers_template(),
            hold_ms if hold_ms is not None and callback else "",
            *self._take_args(take),
            *counts,
        ]
        try:
            reply = self._replicas.run(self._redis, self._complete, keys=keys, args=args)
        except NotReplicated as exc:  # finished on the primary; its callback waits for the replicas
            log.warning("job %s: finished, not yet on its replicas: %s", job_id, exc)
            taken = self._taken(exc.reply[2], take) if exc.reply else None
            return Completion(True, held=hold_ms is not None and callback, taken=taken)
        outcome, raw, taken_raw = reply
        fields = {text(raw[i]): text(raw[i + 1]) for i in range(0, len(raw), 2)} if raw else None
        return Completion(int(outcome) == 1, held=fields is not None, fields=fields, taken=self._taken(taken_raw, take))

    def _take_args(self, take: TakeNext | None) -> list[str | int]:
        """``complete.lua``'s ARGV 17 to 25: what the thread takes next, if anything."""
        if take is None:
            return ["", 0, "", "", "", "", "", "", 0]
        sent_at = self._clock.now().isoformat() if take.token_account and self._replicas.required == 0 else ""
        return [
            take.owner,
            take.lease_ms,
            sent_at,
            take.token_account,
            self._keys.lane_prefix,
            self._keys.delayed(""),
            self._keys.limiter_prefix,
            "",  # not read (it was the lease key prefix)
            TAKE_ACCOUNTS,
        ]

    def _taken(self, raw: list[bytes], take: TakeNext | None) -> Taken | None:
        """The job ``complete.lua`` took for the calling thread, as a claim of it (None: none)."""
        if not raw or take is None:
            return None
        job_id, dispatch, account, inflight, attempts, op, submitted_at, batch, sent = raw
        batch_key = text(batch)
        claim = Claim(
            "ok",
            inflight=inflight == b"1",
            attempts=int(attempts),
            operation=Operation.model_validate_json(op),
            submitted_at=datetime.fromisoformat(text(submitted_at)),
            batch_id=self._keys.batch_id(batch_key) if batch_key else None,
            sent=int(sent) if int(sent) >= 0 else None,
        )
        return Taken(text(job_id), int(dispatch), text(account), take.owner, claim)

    def _followers_template(self) -> tuple[str, str]:
        """The callback message template for the jobs that joined a call (Celery is imported here only)."""
        if self._callback_template is None:
            self._callback_template = message_template(DELIVER_TASK, queue=CALLBACKS_QUEUE)
        return self._callback_template

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
        """Park the job for ``delay_s``, then back in its lane; releases its lease (``counts``: the
        metrics of the call that failed, added in the same step)."""
        keys = [
            self._keys.job(job_id),
            self._keys.leases,
            self._keys.delayed(account),
            self._keys.running,
            self._keys.ready,
            self._keys.wake,
            self._keys.limiter_state(account),  # last: reschedule.lua lowers its delayed hint
        ]
        args: list[str | int] = [
            owner,
            status,
            error.model_dump_json() if error else "",
            int(delay_s * 1000),
            job_id,
            response.model_dump_json() if response else "",
            account,
            *counts,
        ]
        return int(self._reschedule(keys=keys, args=args)) == 1
