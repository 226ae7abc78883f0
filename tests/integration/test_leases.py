"""Job leases as one sorted set (issue 17): ``Keys.leases`` (job id -> deadline) and the job's ``owner``.

A take is one ``ZADD NX`` (an expired lease is taken over, a live one refuses), a finish one
``ZREM``, a renewal checks the owner, recovery takes back the leases whose deadline is past
(clearing their owner), and the "call sent" record refuses an owner whose lease is not its own
and live. Jobs a previous version's worker runs (an entry in ``running`` and a lease key) are
still recovered, during a rolling upgrade. No worker process: the steps run through the
runtime's stores against the test's Redis.
"""

from __future__ import annotations

import pytest

from optimum_bridge.errors import Deferred
from optimum_bridge.jobs.leases import LeaseKeeper
from optimum_bridge.jobs.outcomes import TakeNext
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.quota.rate import Quota, RateLimit
from optimum_bridge.schemas import ApiResponse
from tests.support import give_slot

QUOTA = Quota.of(RateLimit(100, 1.0), margin_s=0.0)
LEASE_MS = 5000
ENV = {"BRIDGE_RATE_BURST": "100"}  # starts right after one another are not held back by the pacer
DONE = {"succeeded": True, "response": ApiResponse(status_code=200, body=[]), "error": None, "callback": False}


def op(n: int) -> dict[str, object]:
    return {"method": "GET", "path": "/Vehicles", "query": {"page": n}}  # distinct: no shared call


def now_ms(rt: Runtime) -> int:
    seconds, micros = rt.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def deadline(rt: Runtime, job_id: str) -> float | None:
    return rt.redis.zscore(rt.keys.leases, job_id)


def owner(rt: Runtime, job_id: str) -> bytes | None:
    return rt.redis.hget(rt.keys.job(job_id), "owner")


def expire(rt: Runtime, job_id: str) -> None:
    """The lease ran out (its worker died, or stalled past it): its deadline is behind Redis's clock."""
    rt.redis.zadd(rt.keys.leases, {job_id: now_ms(rt) - 1}, xx=True)


def claim(rt: Runtime, job_id: str, dispatch: int, who: str) -> str:
    return rt.jobs.claim(job_id, dispatch, who, quota=QUOTA, account="default", lease_ms=LEASE_MS).outcome


def test_a_claim_takes_the_lease_in_one_entry_and_writes_its_owner(bridge):
    rt, client, _ = bridge(**ENV)
    job = client.submit(op(0))
    before = now_ms(rt)
    assert claim(rt, job, give_slot(rt, job), "w1") == "ok"
    assert owner(rt, job) == b"w1"
    assert before + LEASE_MS <= (deadline(rt, job) or 0) <= now_ms(rt) + LEASE_MS
    assert not rt.redis.exists(rt.keys.running, rt.keys.lease(job))  # the previous version's shape: not written
    rt.jobs.finish(job, "w1", **DONE)
    assert deadline(rt, job) is None  # the finish removes it
    keeper = LeaseKeeper(rt.redis, rt.keys, ttl_ms=60_000)
    with keeper.hold(job, "w1"):  # a renewal racing the finish: the owner field is still w1
        assert keeper.renew_once() == 0
    assert deadline(rt, job) is None  # not brought back


def test_a_live_lease_refuses_a_claim_and_one_that_ran_out_is_taken_over(bridge):
    rt, client, _ = bridge(**ENV)
    job = client.submit(op(0))
    dispatch = give_slot(rt, job)
    rt.redis.zadd(rt.keys.leases, {job: now_ms(rt) + 3000})  # another worker's, live
    rt.redis.hset(rt.keys.job(job), "owner", "w0")
    refused = rt.jobs.claim(job, dispatch, "w1", quota=QUOTA, account="default", lease_ms=LEASE_MS)
    assert refused.outcome == "leased" and 2000 < refused.lease_ms <= 3000  # what is left of it
    assert owner(rt, job) == b"w0"
    expire(rt, job)
    assert claim(rt, job, dispatch, "w1") == "ok"
    assert owner(rt, job) == b"w1" and (deadline(rt, job) or 0) > now_ms(rt) + LEASE_MS - 1000


def test_a_take_at_finish_skips_a_job_under_a_live_lease_and_takes_it_once_the_lease_ran_out(bridge):
    rt, client, _ = bridge(**ENV)
    first, second = client.submit(op(0)), client.submit(op(1))
    assert claim(rt, first, give_slot(rt, first), "w1") == "ok"
    assert claim(rt, second, give_slot(rt, second), "w3") == "ok"
    held = client.submit(op(2))
    rt.redis.zadd(rt.keys.leases, {held: now_ms(rt) + 3000})  # a worker still holds it (a failover's leftovers)
    assert rt.jobs.finish(first, "w1", take=TakeNext("w2", LEASE_MS), **DONE).taken is None
    assert rt.redis.zscore(rt.keys.lane("normal"), held) is not None  # back at its lane's head
    expire(rt, held)
    taken = rt.jobs.finish(second, "w3", take=TakeNext("w2", LEASE_MS), **DONE).taken
    assert taken is not None and taken.job_id == held
    assert owner(rt, held) == b"w2" and (deadline(rt, held) or 0) > now_ms(rt)


def test_recovery_takes_back_an_expired_lease_once_and_clears_its_owner(bridge):
    rt, client, _ = bridge(**ENV)
    dead, alive = client.submit(op(0)), client.submit(op(1))
    assert claim(rt, dead, give_slot(rt, dead), "w1") == "ok"
    assert claim(rt, alive, give_slot(rt, alive), "w2") == "ok"
    rt.redis.hset(rt.keys.job(dead), "attempts", 1)
    assert rt.recovery.run() == []  # both live
    expire(rt, dead)
    assert rt.recovery.run() == [(dead, "lease")]
    assert rt.recovery.run() == []  # once
    assert deadline(rt, dead) is None and owner(rt, dead) is None
    assert client.get(dead).status == "retrying" and rt.redis.zscore(rt.keys.lane("normal"), dead) is not None
    assert deadline(rt, alive) is not None and client.get(alive).status == "running"
    assert claim(rt, dead, give_slot(rt, dead), "w3") == "ok"  # its next dispatch runs it


def test_a_job_run_by_a_previous_version_worker_is_recovered_once_its_lease_key_is_gone(bridge):
    """A rolling upgrade: the old worker wrote an entry in ``running`` and a lease key, not a lease entry."""
    rt, client, _ = bridge(**ENV)
    job = client.submit(op(0))
    give_slot(rt, job)
    rt.redis.zrem(rt.keys.dispatched, job)  # what the previous version's claim.lua does
    rt.redis.set(rt.keys.lease(job), "old-worker", px=60_000)
    rt.redis.zadd(rt.keys.running, {job: now_ms(rt)})
    rt.redis.hset(rt.keys.job(job), mapping={"status": "running", "attempts": 1, "inflight": 1})
    assert rt.recovery.run() == []  # its lease key is live
    rt.redis.delete(rt.keys.lease(job))  # it ran out: the old worker died
    assert rt.recovery.run() == [(job, "lease")]
    assert rt.recovery.run() == []
    assert rt.redis.zcard(rt.keys.running) == 0
    assert client.get(job).status == "retrying" and rt.redis.zscore(rt.keys.lane("normal"), job) is not None


def test_renewal_extends_only_the_owners_lease_and_never_brings_back_one_taken_back(bridge):
    rt, client, _ = bridge(**ENV)
    job = client.submit(op(0))
    assert claim(rt, job, give_slot(rt, job), "w1") == "ok"
    keeper = LeaseKeeper(rt.redis, rt.keys, ttl_ms=60_000)
    before = deadline(rt, job)
    with keeper.hold(job, "intruder"):
        assert keeper.renew_once() == 0
    assert deadline(rt, job) == before
    with keeper.hold(job, "w1"):
        assert keeper.renew_once() == 1
        assert (deadline(rt, job) or 0) > now_ms(rt) + 50_000
        expire(rt, job)
        assert rt.recovery.run() == [(job, "lease")]
        assert keeper.renew_once() == 0  # the owner is cleared and the entry gone: not renewed, not added
    assert deadline(rt, job) is None


def test_a_lease_taken_over_is_neither_renewed_nor_released_by_its_old_owner(bridge):
    rt, client, _ = bridge(**ENV)
    job = client.submit(op(0))
    dispatch = give_slot(rt, job)
    assert claim(rt, job, dispatch, "w1") == "ok"
    rt.redis.zadd(rt.keys.dispatched, {job: now_ms(rt) + 10_000})  # a redelivery the old owner did not see
    expire(rt, job)
    assert claim(rt, job, dispatch, "w2") == "ok"
    taken_over = deadline(rt, job)
    keeper = LeaseKeeper(rt.redis, rt.keys, ttl_ms=60_000)
    with keeper.hold(job, "w1"):
        assert keeper.renew_once() == 0
    rt.jobs.reschedule(job, "w1", account="default", delay_s=0.0, status="queued")
    assert deadline(rt, job) == taken_over and owner(rt, job) == b"w2"  # still w2's


def test_a_worker_whose_lease_was_taken_back_does_not_park_the_new_holders_call(bridge):
    """w1 stalls past its lease; recovery takes the job back and w2 sends its (not idempotent) call;
    w1's late reschedule must leave the job to w2: were it parked with ``inflight`` cleared, a crash
    of w2 would have the call sent again (the review's reproduction)."""
    rt, client, _ = bridge(**ENV)
    job = client.submit({"method": "POST", "path": "/Persons", "body": {"n": 1}})
    assert claim(rt, job, give_slot(rt, job), "w1") == "ok"
    expire(rt, job)
    assert rt.recovery.run() == [(job, "lease")]
    second = give_slot(rt, job)
    assert claim(rt, job, second, "w2") == "ok"
    assert rt.jobs.mark_sent(job, second, quota=QUOTA, account="default", owner="w2") == 1

    assert not rt.jobs.reschedule(job, "w1", account="default", delay_s=0.0, status="queued")

    status, inflight = rt.redis.hmget(rt.keys.job(job), "status", "inflight")
    assert (status, inflight, owner(rt, job)) == (b"running", b"1", b"w2")
    assert rt.redis.zscore(rt.keys.delayed("default"), job) is None and deadline(rt, job) is not None
    expire(rt, job)  # w2 dies mid-call
    rt.recovery.run()
    third = rt.jobs.claim(job, give_slot(rt, job), "w3", quota=QUOTA, account="default", lease_ms=LEASE_MS)
    assert third.outcome == "ok" and third.inflight  # the executor will not send it blindly again


def test_a_lease_that_ran_out_is_not_renewed_even_before_recovery_comes(bridge):
    rt, client, _ = bridge(**ENV)
    job = client.submit(op(0))
    assert claim(rt, job, give_slot(rt, job), "w1") == "ok"
    expire(rt, job)
    keeper = LeaseKeeper(rt.redis, rt.keys, ttl_ms=60_000)
    with keeper.hold(job, "w1"):
        assert keeper.renew_once() == 0
    assert rt.recovery.run() == [(job, "lease")]


@pytest.mark.parametrize("lost", ["another owner", "lease ran out", "no lease"])
def test_no_call_is_recorded_as_sent_unless_the_lease_is_the_owners_and_live(bridge, lost):
    rt, client, _ = bridge(**ENV)
    job = client.submit(op(0))
    dispatch = give_slot(rt, job)
    assert claim(rt, job, dispatch, "w1") == "ok"
    if lost == "another owner":
        rt.redis.hset(rt.keys.job(job), "owner", "w2")
    elif lost == "lease ran out":
        expire(rt, job)
    else:
        rt.redis.zrem(rt.keys.leases, job)
    with pytest.raises(Deferred):
        rt.jobs.mark_sent(job, dispatch, quota=QUOTA, account="default", owner="w1")
    assert rt.redis.hget(rt.keys.job(job), "attempts") in (None, b"0")
    rt.redis.hset(rt.keys.job(job), "owner", "w1")
    rt.redis.zadd(rt.keys.leases, {job: now_ms(rt) + LEASE_MS})
    assert rt.jobs.mark_sent(job, dispatch, quota=QUOTA, account="default", owner="w1") == 1
