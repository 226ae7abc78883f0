"""Runs one attempt of a job and decides what comes next (spec §5).

claim the dispatched job (lease; stale messages, finished jobs and slots that went by are
refused) -> call the API at once -> classify the answer -> finish the job (taking the next one
for this thread) and hand its callback's first delivery to ``FirstDelivery``, or park it for a
retry with backoff. Plain Python over injected stores, so it is tested without Celery.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.errors import AttemptError, Deferred, FinalError, NetworkError, RetryableError
from optimum_bridge.jobs.leases import LeaseKeeper
from optimum_bridge.jobs.outcomes import Claim, TakeNext
from optimum_bridge.jobs.retry import Backoff, classify_status, should_retry
from optimum_bridge.jobs.store import JobStore
from optimum_bridge.process.flag import Flag
from optimum_bridge.schemas import ApiResponse, ErrorInfo, Operation
from optimum_bridge.upstream.client import Attempt, OptimumClient
from optimum_bridge.upstream.tokens import Token

log = logging.getLogger(__name__)


UNKNOWN_OUTCOME = (
    "a previous attempt may have reached the API and the operation is not idempotent "
    "(no idempotency_key): not sent again"
)


class ChainedJobError(Exception):
    """A job this thread took after its first failed unexpectedly (the Celery task knows only the first)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id}: unexpected error")
        self.job_id = job_id


class FirstDelivery(Protocol):
    """Delivers a finished job's callback at once, in its worker (``callbacks.background``)."""

    @property
    def hold_ms(self) -> int:
        """The time a held callback is left to its first delivery before the callbacks watch counts."""
        ...

    def deliver_held(self, subject: str, fields: dict[str, str] | None) -> str:
        """Attempt 1 of the callback of job ``subject``, held for this worker by ``JobStore.finish``."""
        ...


@dataclass(frozen=True)
class Policy:
    """Budgets of an operation's retries."""

    max_attempts: int
    budget_s: float
    backoff: Backoff


@dataclass(frozen=True)
class Run:
    """One execution of one job by this worker."""

    job_id: str
    owner: str
    operation: Operation
    submitted_at: datetime
    account: str = "default"
    batch_id: str | None = None
    dispatch: int = 0


class Executor:
    """Executes jobs by id; safe to call concurrently and on redelivered messages."""

    def __init__(
        self,
        jobs: JobStore,
        apis: Mapping[str, OptimumClient],
        policy: Policy,
        leases: LeaseKeeper,
        *,
        callbacks: FirstDelivery | None = None,
        clock: Clock = SYSTEM_CLOCK,
        chain_s: float = 0.0,
        draining: Flag | None = None,
    ) -> None:
        self._chain_s = chain_s
        self._draining = draining or threading.Event()
        self._local = threading.local()  # per thread: the chain's deadline, the job taken next
        self._callbacks = callbacks
        self._jobs = jobs
        self._apis = apis
        self._policy = policy
        self._leases = leases
        self._clock = clock

    @property
    def chain_s(self) -> float:
        """How long a thread goes on taking jobs after its first (0: it does not)."""
        return self._chain_s

    def run(self, job_id: str, dispatch: int, account: str = "default", *, chain: bool = True) -> str:
        """Run the job's attempt for dispatch number ``dispatch``; returns what happened (for logs and tests).

        With chaining on (``chain_s``), a thread whose job finished takes the next job whose slot is
        free now in the same step (``JobStore.finish(..., take=...)``), and runs it, and so on for
        at most ``chain_s``: no message, no claim, no wake-up between two calls (``chain=False``:
        this job only). A job that fails unexpectedly there raises ``ChainedJobError`` naming it."""
        owner = uuid.uuid4().hex
        api = self._apis.get(account)
        if api is None:  # this worker's accounts file lacks it: leave the job to one that has it
            log.error("job %s: account %r is not configured on this worker; left for another", job_id, account)
            return "unknown_account"
        token = api.cached_token()  # in hand: the claim counts the call as sent too (one step, not two)
        claim = self._jobs.claim(
            job_id, dispatch, owner, quota=api.quota, account=account, lease_ms=self._leases.ttl_ms, send=bool(token)
        )
        if claim.outcome in ("missing", "final", "stale", "late", "leased"):
            log.info("job %s dispatch %d: %s, nothing to do", job_id, dispatch, claim.outcome)
            return claim.outcome
        self._local.deadline = self._clock.monotonic() + (self._chain_s if chain else 0.0)
        self._local.taken = None
        outcome = self._execute(self._run_of(job_id, owner, account, dispatch, claim), claim, token)
        self._chain()
        return outcome

    @staticmethod
    def _run_of(job_id: str, owner: str, account: str, dispatch: int, claim: Claim) -> Run:
        if claim.operation is None or claim.submitted_at is None:
            raise RuntimeError(f"job {job_id}: claim returned no operation")
        return Run(job_id, owner, claim.operation, claim.submitted_at, account, claim.batch_id, dispatch)

    def _execute(self, run: Run, claim: Claim, token: Token | None) -> str:
        """The claimed job's attempt, under its lease."""
        if claim.inflight and not run.operation.idempotent:
            return self._finish(run, response=None, error=ErrorInfo(kind="unknown_outcome", message=UNKNOWN_OUTCOME))
        with self._leases.hold(run.job_id, run.owner):
            return self._attempt(run, claim.attempts, sent=claim.sent, token=token)

    def _chain(self) -> None:
        """Run the jobs this thread took as it finished the one before (see ``run``)."""
        while (taken := self._local.taken) is not None:
            self._local.taken = None
            run = self._run_of(taken.job_id, taken.owner, taken.account, taken.dispatch, taken.claim)
            api = self._apis.get(run.account)
            if api is None:  # not on this worker (yet): back in its lane
                log.error("job %s: account %r is not configured on this worker; put back", run.job_id, run.account)
                status: Literal["queued", "retrying"] = "retrying" if taken.claim.attempts else "queued"
                self._jobs.reschedule(run.job_id, run.owner, account=run.account, delay_s=0.0, status=status)
                return
            try:
                self._execute(run, taken.claim, api.cached_token())
            except redis.RedisError:
                raise  # its lease runs out and recovery puts the job back in its lane
            except Exception as exc:
                raise ChainedJobError(run.job_id) from exc

    def _take_next(self, run: Run) -> TakeNext | None:
        """What ``finish`` takes next for this thread: None when chaining is off, over or draining."""
        deadline = getattr(self._local, "deadline", 0.0)
        if self._chain_s <= 0 or self._draining.is_set() or self._clock.monotonic() >= deadline:
            return None
        api = self._apis.get(run.account)
        held = api is not None and api.cached_token() is not None
        return TakeNext(uuid.uuid4().hex, self._leases.ttl_ms, run.account if held else "")

    def _attempt(self, run: Run, attempts: int, *, sent: int | None = None, token: Token | None = None) -> str:
        """The call; ``sent``: the claim already counted it as sent (attempt number; 0: no room now)."""
        api = self._apis[run.account]
        attempt = attempts  # the attempts made before this one, until this one is recorded as sent
        try:
            if sent is None:
                token = api.token()
                attempt = self._mark_sent(run)  # recorded before the request leaves: never re-sent blindly
            elif sent == 0:
                raise Deferred(0.0)  # the window has no room now: nothing sent, the slot given back
            else:
                attempt = sent  # counted as sent by the claim (or the take) that had the token in hand
                token = token or api.token()
            result = api.send(run.operation, token)
        except Deferred as exc:
            status: Literal["queued", "retrying"] = "retrying" if attempt else "queued"
            self._jobs.reschedule(run.job_id, run.owner, account=run.account, delay_s=exc.delay, status=status)
            log.info("job %s: no rate-limit slot to send it now, back in its lane in %.1fs", run.job_id, exc.delay)
            return "deferred"
        except NetworkError as exc:
            if exc.maybe_sent and not run.operation.idempotent:
                message = f"{exc.message}; not re-sent: it may have reached the API and is not idempotent"
                return self._finish(run, response=None, error=ErrorInfo(kind=exc.kind, message=message))
            return self._retry_or_fail(run, attempt, exc, response=None)
        except AttemptError as exc:
            return self._retry_or_fail(run, attempt, exc, response=None)
        return self._judge(run, attempt, result)

    def _mark_sent(self, run: Run) -> int:
        quota = self._apis[run.account].quota
        return self._jobs.mark_sent(run.job_id, run.dispatch, quota=quota, account=run.account, owner=run.owner)

    def _judge(self, run: Run, attempt: int, result: Attempt) -> str:
        response = result.response
        verdict = classify_status(response.status_code)
        log.info("job %s attempt %d: API answered %d (%s)", run.job_id, attempt, response.status_code, verdict)
        counts = result.counts  # the call's metrics, added by the script that finishes or parks the job
        if verdict == "succeeded":
            return self._finish(run, response=response, error=None, counts=counts)
        if verdict == "failed":
            message = f"the API answered {response.status_code}"
            if 300 <= response.status_code < 400:
                message += "; redirects are not followed (the token stays with the API host)"
            failed = ErrorInfo(kind="http_error", message=message)
            return self._finish(run, response=response, error=failed, counts=counts)
        kind = "rate_limited" if response.status_code == 429 else "server_error"
        error = RetryableError(kind, f"the API answered {response.status_code}", delay=result.retry_after_s)
        return self._retry_or_fail(run, attempt, error, response=response, counts=counts)

    def _retry_or_fail(
        self,
        run: Run,
        attempt: int,
        exc: AttemptError,
        *,
        response: ApiResponse | None,
        counts: tuple[str, ...] = (),
    ) -> str:
        error = ErrorInfo(kind=exc.kind, message=exc.message)
        if isinstance(exc, FinalError):
            return self._finish(run, response=response, error=error, counts=counts)
        delay = self._policy.backoff.delay(max(1, attempt))
        if isinstance(exc, RetryableError) and exc.delay is not None:
            delay = max(delay, exc.delay)
        elapsed = (self._clock.now() - run.submitted_at).total_seconds()
        budget_ok = should_retry(
            attempts=attempt,
            max_attempts=self._policy.max_attempts,
            elapsed_s=elapsed,
            delay_s=delay,
            budget_s=self._policy.budget_s,
        )
        if not budget_ok:
            error = ErrorInfo(kind=exc.kind, message=f"{exc.message} (gave up after {attempt} attempts)")
            return self._finish(run, response=response, error=error, counts=counts)
        self._jobs.reschedule(
            run.job_id,
            run.owner,
            account=run.account,
            delay_s=delay,
            status="retrying",
            error=error,
            response=response,
            counts=counts,
        )
        log.info("job %s attempt %d: %s; retry in %.1fs", run.job_id, attempt, exc.kind, delay)
        return "retrying"

    def _finish(
        self, run: Run, *, response: ApiResponse | None, error: ErrorInfo | None, counts: tuple[str, ...] = ()
    ) -> str:
        hold_ms = None
        if self._callbacks is not None and run.operation.callback is not None:
            hold_ms = self._callbacks.hold_ms
        done = self._jobs.finish(
            run.job_id,
            run.owner,
            succeeded=error is None,
            response=response,
            error=error,
            callback=run.operation.callback is not None,
            batch_id=run.batch_id,
            hold_ms=hold_ms,
            counts=counts,
            take=self._take_next(run),
        )
        self._local.taken = done.taken
        outcome = "succeeded" if error is None else "failed"
        log.info("job %s: %s%s", run.job_id, outcome, "" if done.finished else " (already finished elsewhere)")
        if done.held:
            self._deliver(run.job_id, done.fields)
        return outcome

    def _deliver(self, job_id: str, fields: dict[str, str] | None) -> None:
        """The callback's first delivery; the job is final whatever happens here (the watch on the
        callback queues it again if this fails without settling it)."""
        if self._callbacks is None:
            return
        try:
            self._callbacks.deliver_held(job_id, fields)
        except Exception:
            log.exception("job %s: first callback delivery not settled; the callbacks watch queues it again", job_id)
