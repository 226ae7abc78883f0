"""The executor without Celery: one attempt at a time against the sandbox, state read back from Redis.

Covers the rules of spec §5 that need no worker process: what is retried,
what is final, and the non-idempotent rule after a timeout or a crash.
"""

from __future__ import annotations

from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.keys import Keys
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.quota.rate import Quota, RateLimit
from optimum_bridge.schemas import ApiResponse
from tests.support import bridge_env, calls_to, free_port, give_slot, run, settings_from
from tests.support.fakes import FakeJobs


def lease_elsewhere(rt: Runtime, keys: Keys, job_id: str) -> None:
    """What another worker's live lease on the job is: its owner, and a deadline 5 s away (Redis clock)."""
    seconds, micros = rt.redis.time()
    rt.redis.zadd(keys.leases, {job_id: int(seconds) * 1000 + int(micros) // 1000 + 5000})
    rt.redis.hset(keys.job(job_id), "owner", "someone-else")


def expire_retry(rt: Runtime, job_id: str) -> None:
    """Make a parked retry due now (instead of waiting out its backoff)."""
    rt.redis.zadd(Keys(rt.settings.key_prefix).delayed(), {job_id: 0})


GET = {"method": "GET", "path": "/Vehicles"}
PERSON = {"method": "POST", "path": "/Persons", "body": {"firstName": "Lina", "lastName": "Moreau"}}


def test_post_timeout_is_not_sent_again(bridge):
    rt, client, sb = bridge(OPTIMUM_TIMEOUT_S="0.5")
    sb.add_faults(path="/Persons", responses=[{"status": 201, "delay_ms": 3000}])
    job_id = client.submit(PERSON)
    assert run(rt, job_id) == "failed"
    status = client.get(job_id)
    assert status.error.kind == "timeout" and "not re-sent" in status.error.message
    assert status.attempts == 1 and calls_to(sb, "/Persons") == 1


def test_post_timeout_with_an_idempotency_key_is_retried(bridge):
    rt, client, sb = bridge(OPTIMUM_TIMEOUT_S="0.5")
    sb.add_faults(path="/Persons", responses=[{"status": 201, "delay_ms": 3000}])
    job_id = client.submit({**PERSON, "idempotency_key": "lina-1"})
    assert run(rt, job_id) == "retrying"
    assert client.get(job_id).status == "retrying"
    assert rt.redis.zcard(Keys(client.settings.key_prefix).delayed()) == 1


def test_connection_refused_is_retried_even_for_post(redis_server, prefix, sandbox, runtime):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_API_URL=f"http://127.0.0.1:{free_port()}")
    settings = settings_from(env)
    rt = runtime(settings)
    client = BridgeClient(settings, client=rt.redis)
    job_id = client.submit(PERSON)
    assert run(rt, job_id) == "retrying"  # nothing reached the API: safe to send again
    assert client.get(job_id).error.kind == "connect"


def test_a_crash_after_sending_a_post_fails_it_instead_of_sending_twice(bridge):
    rt, client, sb = bridge()
    job_id = client.submit(PERSON)
    rt.redis.hset(Keys(client.settings.key_prefix).job(job_id), "inflight", "1")  # what a SIGKILL mid-call leaves
    assert run(rt, job_id) == "failed"
    assert client.get(job_id).error.kind == "unknown_outcome"
    assert calls_to(sb, "/Persons") == 0


def test_429_is_retried_after_retry_after_and_pauses_everyone(bridge):
    rt, client, sb = bridge()
    sb.add_faults(path="/Vehicles", responses=[{"status": 429, "headers": {"Retry-After": "30"}}])
    job_id = client.submit({"method": "GET", "path": "/Vehicles"})
    assert run(rt, job_id) == "retrying"
    assert 29 <= rt.limiter.paused_for() <= 30
    due = rt.redis.zrange(Keys(client.settings.key_prefix).delayed(), 0, -1, withscores=True)
    seconds, micros = rt.redis.time()
    assert due[0][1] - (seconds * 1000 + micros // 1000) >= 29_000  # not before Retry-After
    assert client.get(job_id).error.kind == "rate_limited"


def test_an_absurd_retry_after_delays_the_retry_no_longer_than_it_pauses_the_account(bridge):
    rt, client, sb = bridge()
    sb.add_faults(path="/Vehicles", responses=[{"status": 429, "headers": {"Retry-After": "1764700000"}}])
    job_id = client.submit({"method": "GET", "path": "/Vehicles"})
    assert run(rt, job_id) == "retrying"  # an epoch read as seconds neither fails the job nor parks it for years
    due = rt.redis.zrange(Keys(client.settings.key_prefix).delayed(), 0, -1, withscores=True)
    seconds, micros = rt.redis.time()
    assert 0 < due[0][1] - (seconds * 1000 + micros // 1000) <= rt.limiter.paused_for() * 1000 + 1000


def test_retries_stop_at_max_attempts(bridge):
    rt, client, sb = bridge({"error_rate": 1.0}, BRIDGE_MAX_ATTEMPTS="3")
    job_id = client.submit({"method": "GET", "path": "/Persons"})
    outcomes = []
    for _ in range(4):
        outcomes.append(run(rt, job_id))
        expire_retry(rt, job_id)
    assert outcomes == ["retrying", "retrying", "failed", "final"]
    status = client.get(job_id)
    assert status.attempts == 3 and status.response.status_code == 503
    assert status.error.kind == "server_error" and "gave up after 3 attempts" in status.error.message
    assert calls_to(sb, "/Persons") == 3


# -- the fake store of the fast tier answers as the Lua scripts do ------------------------


def store_sequence(store: Any, new: Any, slot: Any, crashed_mid_call: Any, lease_elsewhere: Any) -> list[Any]:
    """One sequence of the executor's store calls: every refusal and count the fast tier relies on."""
    take = {"quota": QUOTA, "account": "default", "lease_ms": 6000}
    seen: list[Any] = [store.claim("nope", 1, "w0", **take).outcome]  # missing
    first = new()
    given = slot(first)
    seen.append(store.claim(first, given - 1, "w1", **take).outcome)  # a message of an earlier dispatch
    seen.append(store.claim(first, given, "w1", **take).outcome)
    seen.append(store.claim(first, given, "w2", **take).outcome)  # a redelivery of a taken dispatch
    store.reschedule(first, "w1", account="default", delay_s=0.0, status="queued")
    job = new()
    given = slot(job)
    claim = store.claim(job, given, "w2", **take)
    seen += [claim.outcome, claim.attempts, claim.inflight, store.mark_sent(job, given, quota=QUOTA, account="default")]
    store.reschedule(job, "w2", account="default", delay_s=0.0, status="retrying")
    given = slot(job)
    claim = store.claim(job, given, "w3", **take)
    seen += [claim.outcome, claim.attempts, claim.inflight, store.mark_sent(job, given, quota=QUOTA, account="default")]
    done = {"succeeded": True, "response": ApiResponse(status_code=200, body=[]), "error": None, "callback": False}
    seen += [store.finish(job, "w3", **done).finished, store.finish(job, "w3", **done).finished]  # finished once only
    seen.append(store.claim(job, given, "w4", **take).outcome)
    crashed = new()
    crashed_mid_call(crashed)
    claim = store.claim(crashed, slot(crashed), "w5", **take)
    seen += [claim.outcome, claim.inflight]
    held = new()
    given = slot(held)
    lease_elsewhere(held)  # a worker that has not let go of it (it dies: its lease runs out)
    seen.append(store.claim(held, given, "w6", **take).outcome)
    return seen


EXPECTED = [
    "missing",
    "stale",
    "ok",
    "stale",
    "ok",
    0,
    False,
    1,
    "ok",
    1,
    False,
    2,
    True,
    False,
    "final",
    "ok",
    True,
    "leased",
]
QUOTA = Quota.of(RateLimit(100, 1.0), margin_s=0.0)


def test_the_fake_store_answers_as_the_lua_scripts_do(bridge):
    rt, client, _ = bridge()
    keys = Keys(client.settings.key_prefix)
    reads = (dict(GET, query={"page": n}) for n in range(10))  # distinct: identical reads would share a call
    real = store_sequence(
        rt.jobs,
        lambda: client.submit(next(reads)),
        lambda job_id: give_slot(rt, job_id),
        lambda job_id: rt.redis.hset(keys.job(job_id), "inflight", "1"),  # what a SIGKILL mid-call leaves
        lambda job_id: lease_elsewhere(rt, keys, job_id),
    )
    fake = FakeJobs()
    faked = store_sequence(
        fake,
        lambda: fake.add(GET),
        fake.dispatch,
        lambda job_id: setattr(fake.records[job_id], "inflight", True),
        lambda job_id: fake.leases.__setitem__(fake.lease_key(job_id), ("someone-else", 5000)),
    )
    assert real == EXPECTED
    assert faked == real


def test_a_claim_with_the_token_in_hand_counts_the_call_unless_the_window_is_full(bridge):
    """Issue 17: claim.lua does mark_sent.lua's step when the worker holds its token (one call, not two)."""
    rt, client, _ = bridge()
    keys = Keys(client.settings.key_prefix)
    first, second = client.submit_many([GET, {"method": "GET", "path": "/Persons"}])
    claim = rt.jobs.claim(first, give_slot(rt, first), "w1", quota=QUOTA, account="default", lease_ms=5000, send=True)
    assert (claim.outcome, claim.sent, claim.attempts) == ("ok", 1, 0)
    assert rt.redis.hmget(keys.job(first), "attempts", "inflight") == [b"1", b"1"]

    given = give_slot(rt, second)
    seconds, micros = rt.redis.time()
    now_ms = seconds * 1000 + micros // 1000
    rt.redis.zadd(keys.limiter_log(), {f"other{i}": now_ms for i in range(QUOTA.limit)})  # no room left
    # Its slot was given a moment before (in the same millisecond, the start stands as counted then).
    rt.redis.zadd(keys.limiter_log(), {f"{second}.{given}": now_ms - 1})
    claim = rt.jobs.claim(second, given, "w2", quota=QUOTA, account="default", lease_ms=5000, send=True)
    assert (claim.outcome, claim.sent) == ("ok", 0)  # nothing may leave now: the worker gives the slot back
    assert rt.redis.hget(keys.job(second), "attempts") in (None, b"0")
    assert rt.redis.zscore(keys.limiter_log(), f"{second}.{given}") is None
