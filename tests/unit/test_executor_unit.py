"""The executor's rules (spec §5) over in-memory stores: no Redis, no HTTP, no Celery.

``FakeJobs`` (``tests/support/fakes.py``) keeps job records the way the Lua
scripts of ``JobStore`` do (``tests/integration/test_executor.py`` runs one
sequence through both and compares); ``FakeApi`` answers from a script as the real client's
``token`` and ``send`` do (a token refused or no slot: nothing leaves);
``FakeLeases.hold`` only records which lease is held. ``tests/integration/test_executor.py``
runs the same rules against Redis and the sandbox.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from optimum_bridge.clock import Clock
from optimum_bridge.errors import CredentialsRejected, Deferred, FinalError, NetworkError
from optimum_bridge.jobs.executor import UNKNOWN_OUTCOME, Executor, Policy
from optimum_bridge.jobs.retry import Backoff, retry_after
from optimum_bridge.schemas import ApiResponse, ErrorInfo, Operation
from optimum_bridge.upstream.client import Attempt
from tests.support.fakes import LEASE_MS, NOW, FakeJobs, Rescheduled

BACKOFF = Backoff(base_s=2.0, factor=3.0, cap_s=600.0, jitter=0.0)  # 2, 6, 18, 54... exactly
GET = {"method": "GET", "path": "/Vehicles"}
POST = {"method": "POST", "path": "/Persons", "body": {"firstName": "Lina"}, "callback": {"url": "https://h.example/x"}}


class FrozenClock(Clock):
    """Time stands still at ``NOW`` unless a test moves it."""

    def __init__(self) -> None:
        self.moment = NOW

    def now(self) -> datetime:
        return self.moment

    def time(self) -> float:
        return self.moment.timestamp()


Answer = ApiResponse | Exception


@dataclass
class FakeApi:
    """``OptimumClient.token`` and ``send`` from a script of answers (an ``ApiResponse``, or an error to raise)."""

    script: list[Answer] = field(default_factory=list)
    sent: list[Operation] = field(default_factory=list)
    quota: Any = None
    longest_pause_s: float = 3600.0  # what OptimumApi obeys of a Retry-After at most
    leases_during_call: list[set[str]] = field(default_factory=list)
    leases: FakeLeases | None = None
    cached: bool = False  # the process holds a token: the claim counts the call as sent

    def cached_token(self) -> object:
        return "token" if self.cached else None

    def token(self) -> object:
        self.leases_during_call.append(set(self.leases.held) if self.leases else set())
        if self.script and isinstance(self.script[0], Deferred | CredentialsRejected):  # no slot / no token
            raise self.script.pop(0)  # nothing leaves
        return "token"

    def send(self, operation: Operation, token: object) -> Attempt:
        answer = self.script.pop(0) if self.script else ApiResponse(status_code=200, body=[])
        self.sent.append(operation)
        if isinstance(answer, Exception):
            raise answer
        wait = retry_after(answer.headers, now=NOW.timestamp())  # as OptimumClient reads it, capped once
        return Attempt(answer, None if wait is None else min(wait, self.longest_pause_s))


@dataclass
class FakeLeases:
    """``LeaseKeeper`` without renewal: ``hold`` records the lease while the block runs."""

    ttl_ms: int = LEASE_MS
    held: set[str] = field(default_factory=set)

    @contextmanager
    def hold(self, job_id: str, owner: str) -> Iterator[None]:
        self.held.add(job_id)
        try:
            yield
        finally:
            self.held.discard(job_id)


@dataclass
class Bench:
    jobs: FakeJobs
    api: FakeApi
    leases: FakeLeases
    clock: FrozenClock
    executor: Executor

    def answers(self, *script: Answer) -> None:
        self.api.script.extend(script)

    def run(self, job_id: str) -> str:
        """The scheduler gives the job a slot (a new dispatch), then a worker runs it."""
        return self.executor.run(job_id, self.jobs.dispatch(job_id))


def bench(*, max_attempts: int = 5, budget_s: float = 86400.0) -> Bench:
    jobs, leases, clock = FakeJobs(), FakeLeases(), FrozenClock()
    api = FakeApi(leases=leases)
    policy = Policy(max_attempts=max_attempts, budget_s=budget_s, backoff=BACKOFF)
    executor = Executor(jobs, {"default": api}, policy, leases, clock=clock)
    return Bench(jobs, api, leases, clock, executor)


@pytest.fixture
def b() -> Bench:
    return bench()


def answer(status: int, **headers: str) -> ApiResponse:
    return ApiResponse(status_code=status, headers=headers, body={"status": status})


def timeout() -> NetworkError:
    return NetworkError("timeout", "the API did not answer in time: ReadTimeout", maybe_sent=True)


def refused() -> NetworkError:
    return NetworkError("connect", "could not reach the API: ConnectError", maybe_sent=False)


# -- answers --------------------------------------------------------------------------


def test_2xx_completes_the_job_succeeded_with_its_answer_and_callback(b: Bench) -> None:
    job_id = b.jobs.add(POST)
    b.answers(answer(201))
    assert b.run(job_id) == "succeeded"
    record = b.jobs.records[job_id]
    assert (record.status, record.attempts, record.inflight, record.error) == ("succeeded", 1, False, None)
    assert record.response == answer(201) and record.callback_queued
    assert b.api.leases_during_call == [{job_id}]  # the lease is renewed during the call
    assert b.leases.held == set() and b.jobs.leases == {}  # and given back after it
    assert b.jobs.due == []


def test_with_its_token_in_hand_the_worker_claims_and_counts_the_call_in_one_step(b: Bench) -> None:
    b.api.cached = True
    job_id = b.jobs.add(POST)
    assert b.run(job_id) == "succeeded"
    record = b.jobs.records[job_id]
    assert (record.status, record.attempts, record.inflight) == ("succeeded", 1, False)
    assert b.api.leases_during_call == []  # no token asked for: the one in hand was used
    assert len(b.api.sent) == 1


@dataclass
class FakeFirstDelivery:
    """``CallbackSender.deliver_held`` recording its calls; ``fail`` makes it raise."""

    hold_ms: int = 30_000
    delivered: list[tuple[str, dict[str, str] | None]] = field(default_factory=list)
    fail: bool = False

    def deliver_held(self, subject: str, fields: dict[str, str] | None) -> str:
        self.delivered.append((subject, fields))
        if self.fail:
            raise RuntimeError("receiver exploded")
        return "delivered"


@pytest.mark.parametrize("fail", [False, True])
def test_the_worker_that_finishes_a_job_delivers_its_callback_itself(fail: bool) -> None:
    """Issue 17: no callback task when the receiver answers at once; a failing delivery never fails the job."""
    b = bench()
    first = FakeFirstDelivery(fail=fail)
    b.executor = Executor(b.jobs, {"default": b.api}, Policy(5, 86400.0, BACKOFF), b.leases, callbacks=first)
    job_id, plain = b.jobs.add(POST), b.jobs.add(GET)
    assert (b.run(job_id), b.run(plain)) == ("succeeded", "succeeded")
    assert first.delivered == [(job_id, {"id": job_id, "status": "succeeded"})]  # not for the job without a URL
    assert not b.jobs.records[job_id].callback_queued  # held for the worker, not queued


def test_no_callback_queued_without_a_callback_url(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    assert b.run(job_id) == "succeeded"
    assert not b.jobs.records[job_id].callback_queued


def test_404_fails_after_one_attempt(b: Bench) -> None:
    job_id = b.jobs.add({"method": "GET", "path": "/Vehicles/ZZ-999-ZZ"})
    b.answers(answer(404))
    assert b.run(job_id) == "failed"
    record = b.jobs.records[job_id]
    assert (record.status, record.attempts) == ("failed", 1)
    assert record.error == ErrorInfo(kind="http_error", message="the API answered 404")
    assert record.response is not None and record.response.status_code == 404
    assert b.jobs.due == [] and len(b.api.sent) == 1
    assert b.run(job_id) == "final"  # a redelivered message does nothing
    assert len(b.api.sent) == 1


def test_a_redirect_is_final_and_says_it_was_not_followed(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    b.answers(answer(302, location="https://evil.example/steal"))
    assert b.run(job_id) == "failed"
    error = b.jobs.records[job_id].error
    assert error is not None and error.kind == "http_error"
    assert error.message == "the API answered 302; redirects are not followed (the token stays with the API host)"


@pytest.mark.parametrize(("status", "kind"), [(503, "server_error"), (500, "server_error"), (429, "rate_limited")])
def test_retryable_statuses_are_rescheduled_with_backoff(b: Bench, status: int, kind: str) -> None:
    job_id = b.jobs.add(GET)
    b.answers(answer(status))
    assert b.run(job_id) == "retrying"
    record = b.jobs.records[job_id]
    assert (record.status, record.attempts, record.inflight) == ("retrying", 1, False)
    assert record.error == ErrorInfo(kind=kind, message=f"the API answered {status}")
    assert record.response is not None and record.response.status_code == status  # the last answer is kept
    assert b.jobs.due == [Rescheduled(job_id, BACKOFF.delay(1), "retrying")]
    assert b.jobs.leases == {}


def test_backoff_grows_with_each_attempt_then_success(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    b.answers(answer(503), answer(502), answer(504), answer(200))
    assert [b.run(job_id) for _ in range(4)] == ["retrying", "retrying", "retrying", "succeeded"]
    assert [r.delay_s for r in b.jobs.due] == [2.0, 6.0, 18.0]
    assert b.jobs.records[job_id].attempts == 4


def test_retry_after_is_a_floor_over_the_backoff(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    b.answers(answer(429, **{"retry-after": "30"}))
    assert b.run(job_id) == "retrying"
    assert b.jobs.due[-1].delay_s == 30.0  # longer than the backoff's 2 s: Retry-After wins

    later = b.jobs.add(GET, attempts=3)  # the fourth attempt's backoff is 54 s
    b.answers(answer(503, **{"retry-after": "5"}))
    assert b.run(later) == "retrying"
    assert b.jobs.due[-1].delay_s == 54.0  # a shorter Retry-After does not shorten the backoff


def test_retry_after_as_an_http_date_is_read_against_the_clock(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    b.answers(answer(503, **{"retry-after": format_datetime(NOW + timedelta(seconds=90), usegmt=True)}))
    assert b.run(job_id) == "retrying"
    assert b.jobs.due[-1].delay_s == 90.0


# -- network errors and the non-idempotent rule -----------------------------------------


def test_post_timeout_is_failed_and_not_sent_again(b: Bench) -> None:
    job_id = b.jobs.add(POST)
    b.answers(timeout())
    assert b.run(job_id) == "failed"
    record = b.jobs.records[job_id]
    assert record.error is not None and record.error.kind == "timeout"
    assert record.error.message == (
        "the API did not answer in time: ReadTimeout; not re-sent: it may have reached the API and is not idempotent"
    )
    assert record.attempts == 1 and len(b.api.sent) == 1 and b.jobs.due == []
    assert record.callback_queued  # the producer hears about it


def test_post_timeout_with_an_idempotency_key_is_retried(b: Bench) -> None:
    job_id = b.jobs.add({**POST, "idempotency_key": "lina-1"})
    b.answers(timeout(), answer(201))
    assert b.run(job_id) == "retrying"
    assert b.jobs.records[job_id].error == ErrorInfo(kind="timeout", message=timeout().message)
    assert b.jobs.due == [Rescheduled(job_id, BACKOFF.delay(1), "retrying")]
    assert b.run(job_id) == "succeeded"
    assert b.jobs.records[job_id].attempts == 2


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_timeout_of_an_idempotent_method_is_retried(b: Bench, method: str) -> None:
    job_id = b.jobs.add({"method": method, "path": "/Persons/7"})
    b.answers(timeout())
    assert b.run(job_id) == "retrying"


def test_connect_error_is_retried_even_for_post(b: Bench) -> None:
    job_id = b.jobs.add(POST)
    b.answers(refused())
    assert b.run(job_id) == "retrying"  # nothing reached the API: safe to send again
    record = b.jobs.records[job_id]
    assert record.error == ErrorInfo(kind="connect", message=refused().message)
    assert (record.status, record.inflight) == ("retrying", False)


def test_no_token_is_retried_without_counting_an_attempt(b: Bench) -> None:
    job_id = b.jobs.add(POST)
    b.answers(CredentialsRejected("credentials_rejected", "identity server refused the client credentials (401)"))
    assert b.run(job_id) == "retrying"
    record = b.jobs.records[job_id]
    assert record.attempts == 0 and b.api.sent == []
    assert record.error is not None and record.error.kind == "credentials_rejected"
    assert b.jobs.due == [Rescheduled(job_id, BACKOFF.delay(1), "retrying")]


def test_a_final_error_ends_the_job_at_once(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    b.answers(FinalError("bad_answer", "the API sent something unusable"))
    assert b.run(job_id) == "failed"
    assert b.jobs.records[job_id].error == ErrorInfo(kind="bad_answer", message="the API sent something unusable")
    assert b.jobs.due == []


# -- crashes: inflight left behind ------------------------------------------------------


def test_a_crash_after_sending_a_post_fails_it_as_unknown_outcome(b: Bench) -> None:
    job_id = b.jobs.add(POST, attempts=1, inflight=True)  # what a SIGKILL mid-call leaves
    assert b.run(job_id) == "failed"
    record = b.jobs.records[job_id]
    assert record.error == ErrorInfo(kind="unknown_outcome", message=UNKNOWN_OUTCOME)
    assert record.response is None and record.attempts == 1 and record.callback_queued
    assert b.api.sent == [] and b.api.leases_during_call == []  # never called again
    assert b.jobs.leases == {}


def test_a_crash_after_sending_a_get_runs_it_again(b: Bench) -> None:
    job_id = b.jobs.add(GET, attempts=1, inflight=True)
    assert b.run(job_id) == "succeeded"
    assert len(b.api.sent) == 1 and b.jobs.records[job_id].attempts == 2


def test_a_crash_after_sending_a_post_with_an_idempotency_key_runs_it_again(b: Bench) -> None:
    job_id = b.jobs.add({**POST, "idempotency_key": "lina-1"}, attempts=1, inflight=True)
    assert b.run(job_id) == "succeeded"
    assert len(b.api.sent) == 1


# -- budgets ----------------------------------------------------------------------------


def test_retries_stop_at_max_attempts() -> None:
    b = bench(max_attempts=3)
    job_id = b.jobs.add({"method": "GET", "path": "/Persons"})
    b.answers(answer(503), answer(503), answer(503), answer(503))
    assert [b.run(job_id) for _ in range(4)] == ["retrying", "retrying", "failed", "final"]
    record = b.jobs.records[job_id]
    assert record.attempts == 3 and len(b.api.sent) == 3
    assert record.response is not None and record.response.status_code == 503
    assert record.error == ErrorInfo(kind="server_error", message="the API answered 503 (gave up after 3 attempts)")


def test_retries_stop_when_the_next_one_would_end_past_the_duration_budget() -> None:
    b = bench(budget_s=3600.0)
    fits = b.jobs.add(GET, submitted_at=NOW - timedelta(seconds=3598))  # 3598 + 2 s backoff = the budget
    late = b.jobs.add(GET, submitted_at=NOW - timedelta(seconds=3599))
    b.answers(answer(503), answer(503))
    assert b.run(fits) == "retrying"
    assert b.run(late) == "failed"
    error = b.jobs.records[late].error
    assert error is not None and error.message == "the API answered 503 (gave up after 1 attempts)"


def test_a_retry_after_beyond_the_budget_fails_now_instead_of_waiting() -> None:
    b = bench(budget_s=600.0)
    job_id = b.jobs.add(GET)
    b.answers(answer(429, **{"retry-after": "3600"}))
    assert b.run(job_id) == "failed"
    assert b.jobs.due == []


# -- no attempt at all: leased, deferred, missing, finished --------------------------------


def test_a_job_held_by_another_worker_is_left_to_it(b: Bench) -> None:
    """Its lease ends only if that worker dies, and then the scheduler's recovery puts it back in its lane."""
    job_id = b.jobs.add(GET)
    b.jobs.leases[b.jobs.lease_key(job_id)] = ("someone-else", 4500)
    assert b.run(job_id) == "leased"
    assert b.jobs.due == []
    assert b.jobs.records[job_id].status == "queued"
    assert b.jobs.leases == {b.jobs.lease_key(job_id): ("someone-else", 4500)}  # not ours to release
    assert b.api.sent == [] and b.api.leases_during_call == []


def test_deferred_is_rescheduled_without_using_an_attempt(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    b.answers(Deferred(12.5))
    assert b.run(job_id) == "deferred"
    record = b.jobs.records[job_id]
    assert (record.status, record.attempts, record.error) == ("queued", 0, None)
    assert b.jobs.due == [Rescheduled(job_id, 12.5, "queued")] and b.api.sent == []
    assert b.jobs.leases == {}


def test_deferred_after_a_failed_attempt_stays_retrying(b: Bench) -> None:
    job_id = b.jobs.add(GET)
    b.answers(answer(503), Deferred(3.0), answer(200))
    assert [b.run(job_id) for _ in range(3)] == ["retrying", "deferred", "succeeded"]
    assert [(r.delay_s, r.status) for r in b.jobs.due] == [(2.0, "retrying"), (3.0, "retrying")]
    assert b.jobs.records[job_id].attempts == 2  # the deferral used none


def test_deferred_does_not_eat_the_attempts_budget() -> None:
    b = bench(max_attempts=2)
    job_id = b.jobs.add(GET)
    b.answers(answer(503), Deferred(1.0), Deferred(1.0), Deferred(1.0), answer(200))
    assert [b.run(job_id) for _ in range(5)] == ["retrying", "deferred", "deferred", "deferred", "succeeded"]


def test_a_stale_message_is_left_alone(b: Bench) -> None:
    """A message from an earlier dispatch (a redelivery, or one that came after its job was recovered)."""
    job_id = b.jobs.add(GET)
    current = b.jobs.dispatch(job_id)
    assert b.executor.run(job_id, current - 1) == "stale"
    assert b.api.sent == [] and b.jobs.records[job_id].status == "queued"
    assert b.executor.run(job_id, current) == "succeeded"


def test_missing_and_finished_jobs_are_left_alone(b: Bench) -> None:
    assert b.run("nope") == "missing"
    done = b.jobs.add(GET, status="succeeded", attempts=1)
    assert b.run(done) == "final"
    assert b.api.sent == [] and b.jobs.due == [] and b.jobs.completions == 0


def test_a_job_finished_elsewhere_meanwhile_is_not_finished_twice(b: Bench) -> None:
    job_id = b.jobs.add(GET)

    class Racing(FakeApi):
        def send(self, operation: Operation, token: object) -> Attempt:
            reply = super().send(operation, token)
            b.jobs.records[job_id].status = "succeeded"  # another worker's completion landed first
            return reply

    racing = Racing(leases=b.leases)
    executor = Executor(b.jobs, {"default": racing}, Policy(5, 86400.0, BACKOFF), b.leases, clock=b.clock)
    assert executor.run(job_id, b.jobs.dispatch(job_id)) == "succeeded"
    assert b.jobs.completions == 0
