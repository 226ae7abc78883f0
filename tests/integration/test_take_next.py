"""Finishing a job takes the next one for the same thread (issue 17): ``complete.lua``'s ``take_next``.

No worker process: jobs are claimed and finished through the runtime's ``JobStore`` against
the test's Redis, as ``test_executor.py`` does, and the state ``take_next`` leaves is read
back key by key (the leases set and the job's owner, lanes, limiter log, ready set, wake-up list). The last
tests run the executor itself: it chains to the next job only while chaining is on and the
worker is not draining.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from optimum_bridge import BridgeClient
from optimum_bridge.jobs.executor import Executor, Policy
from optimum_bridge.jobs.outcomes import Completion, TakeNext
from optimum_bridge.jobs.retry import Backoff
from optimum_bridge.keys import Keys
from optimum_bridge.lua import scripts
from optimum_bridge.process.live_accounts import LiveApis
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.quota.headers import Statement
from optimum_bridge.quota.rate import Quota, RateLimit
from optimum_bridge.schemas import ApiResponse
from tests.support import calls_to, give_slot

QUOTA = Quota.of(RateLimit(100, 1.0), margin_s=0.0)
LEASE_MS = 5000
#: The fixture's 100/s with a burst as large as the window: the pacer never holds back a start made
#: right after another (without one, a job taken within 10 ms of the one before would have to wait).
ENV = {"BRIDGE_RATE_BURST": "100"}


ZMPOP_LINE = "local HAS_ZMPOP = (redis.REDIS_VERSION_NUM or 0) >= 0x070000"


@pytest.fixture(autouse=True, params=["ZMPOP", "ZRANGE and ZREM"])
def lanes_popped_with(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test twice: lanes popped with Redis 7's ZMPOP, and as on Redis 6.2 (a ZRANGE per lane, a ZREM)."""
    if request.param != "ZMPOP":
        read_file = scripts._read

        def without_zmpop(name: str) -> str:
            text = read_file(name)
            if name == "_serve":
                assert ZMPOP_LINE in text
                text = text.replace(ZMPOP_LINE, "local HAS_ZMPOP = false")
            return text

        monkeypatch.setattr(scripts, "_read", without_zmpop)
    scripts.source.cache_clear()
    yield request.param
    scripts.source.cache_clear()


def read(n: int, **extra: Any) -> dict[str, Any]:
    """A distinct GET each (identical reads would share one call)."""
    return {"method": "GET", "path": "/Vehicles", "query": {"page": n}, **extra}


def redis_now_ms(rt: Runtime) -> int:
    seconds, micros = rt.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def claimed(rt: Runtime, client: BridgeClient, operation: dict[str, Any], owner: str = "w1") -> str:
    """A job given its slot and claimed by ``owner``, as a worker's message would have it."""
    job_id = client.submit(operation)
    claim = rt.jobs.claim(job_id, give_slot(rt, job_id), owner, quota=QUOTA, account="default", lease_ms=LEASE_MS)
    assert claim.outcome == "ok"
    return job_id


def finish(rt: Runtime, job_id: str, owner: str = "w1", take: TakeNext | None = None) -> Completion:
    ok = ApiResponse(status_code=200, body=[])
    return rt.jobs.finish(job_id, owner, succeeded=True, response=ok, error=None, callback=False, take=take)


def in_a_lane(rt: Runtime, keys: Keys, job_id: str) -> bool:
    return any(rt.redis.zscore(lane, job_id) is not None for lane in keys.lanes())


def released(rt: Runtime, keys: Keys, job_id: str) -> bool:
    """The finished job holds nothing any more: no entry in the leases set."""
    return rt.redis.zscore(keys.leases, job_id) is None


def test_finishing_takes_the_oldest_job_of_the_highest_lane_for_the_new_owner(bridge):
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    first = claimed(rt, client, read(0))
    normal = client.submit(read(1))
    urgent = client.submit(read(2, priority="urgent"))  # submitted after, but in a higher lane
    assert rt.redis.zscore(keys.leases, first) is not None and rt.redis.hget(keys.job(first), "owner") == b"w1"

    done = finish(rt, first, take=TakeNext("w2", LEASE_MS))

    assert done.finished and client.get(first).status == "succeeded"
    taken = done.taken
    assert taken is not None
    assert (taken.job_id, taken.account, taken.owner, taken.dispatch) == (urgent, "default", "w2", 1)
    assert taken.claim.outcome == "ok" and taken.claim.operation is not None
    assert taken.claim.operation.query == {"page": 2}
    assert rt.redis.hget(keys.job(urgent), "status") == b"running"
    assert rt.redis.hget(keys.job(urgent), "dispatch") == b"1"
    assert rt.redis.hget(keys.job(urgent), "owner") == b"w2"
    assert 0 < (rt.redis.zscore(keys.leases, urgent) or 0) - redis_now_ms(rt) <= LEASE_MS
    assert not in_a_lane(rt, keys, urgent)
    assert rt.redis.zscore(keys.limiter_log(), f"{urgent}.{taken.dispatch}") is not None  # its start counted
    assert rt.redis.zscore(keys.dispatched, urgent) is None  # no message: nothing waits for a hand-off
    assert released(rt, keys, first)
    # The one it did not take waits where it was, untouched.
    assert rt.redis.zscore(keys.lane("normal"), normal) is not None
    assert rt.redis.hget(keys.job(normal), "status") == b"queued"


@pytest.mark.parametrize("token_account", ["default", ""], ids=["token in hand", "no token"])
def test_a_take_counts_the_call_as_sent_only_with_the_accounts_token_in_hand(bridge, token_account):
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    first = claimed(rt, client, read(0))
    following = client.submit(read(1))

    taken = finish(rt, first, take=TakeNext("w2", LEASE_MS, token_account=token_account)).taken

    assert taken is not None and taken.job_id == following and taken.claim.attempts == 0
    attempts, inflight, started = rt.redis.hmget(keys.job(following), "attempts", "inflight", "started_at")
    if token_account:  # mark_sent's step, done by the take
        assert taken.claim.sent == 1
        assert (attempts, inflight) == (b"1", b"1") and started
    else:  # left to mark_sent.lua
        assert taken.claim.sent is None
        assert attempts in (None, b"0") and inflight in (None, b"0") and started is None
    assert rt.redis.hget(keys.job(following), "status") == b"running"  # taken either way


def test_a_full_window_takes_nothing_and_gives_the_account_its_next_slot_time(bridge):
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    first = claimed(rt, client, read(0))
    waiting = client.submit(read(1))
    limit, window = (int(v) for v in rt.redis.hget(keys.quotas, "default").split()[:2])
    now_ms = redis_now_ms(rt)
    rt.redis.zadd(keys.limiter_log(), {f"other{i}": now_ms for i in range(limit)})  # no room left
    rt.redis.delete(keys.wake)

    done = finish(rt, first, take=TakeNext("w2", LEASE_MS, token_account="default"))

    assert done.finished and done.taken is None
    assert released(rt, keys, first)
    assert rt.redis.zscore(keys.lane("normal"), waiting) is not None
    assert rt.redis.hget(keys.job(waiting), "status") == b"queued"
    due = rt.redis.zscore(keys.ready, "default")
    assert due is not None and now_ms + window - 50 <= due <= now_ms + window + 1000  # its next slot, not now
    assert due > redis_now_ms(rt)
    # The only account in the ready set, so the earliest: a dispatcher is woken to wait for it.
    assert rt.redis.llen(keys.wake) >= 1


def test_finishing_without_a_take_frees_the_thread_and_wakes_a_dispatcher_when_work_is_due(bridge):
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    first = claimed(rt, client, read(0))
    waiting = client.submit(read(1))
    rt.redis.delete(keys.wake)

    done = finish(rt, first, take=None)

    assert done.finished and done.taken is None
    assert released(rt, keys, first)
    assert rt.redis.zscore(keys.lane("normal"), waiting) is not None
    assert rt.redis.hget(keys.job(waiting), "status") == b"queued"
    assert rt.redis.llen(keys.wake) == 1


def test_finishing_without_a_take_and_nothing_due_wakes_no_one(bridge):
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    first = claimed(rt, client, read(0))
    assert rt.redis.zcard(keys.ready) == 0
    rt.redis.delete(keys.wake)

    assert finish(rt, first, take=None).taken is None
    assert released(rt, keys, first)
    assert rt.redis.llen(keys.wake) == 0


# -- the executor: it asks for a take only while chaining is on and the worker is not draining ----


def first_then_second(rt: Runtime, client: BridgeClient) -> tuple[str, int, str]:
    """A job given its slot (its message would carry the dispatch), and one submitted after it, waiting."""
    first = client.submit(read(0))
    dispatch = give_slot(rt, first)
    return first, dispatch, client.submit(read(1))


def test_the_executor_runs_the_job_it_took_on_the_same_call(bridge):
    rt, client, sb = bridge(**ENV)
    first, dispatch, second = first_then_second(rt, client)
    assert rt.executor.run(first, dispatch) == "succeeded"
    # No message and no dispatcher ran for the second: the first one's thread took and ran it.
    assert [client.get(i).status for i in (first, second)] == ["succeeded", "succeeded"]
    assert calls_to(sb, "/Vehicles") == 2


def test_an_executor_without_chaining_leaves_the_next_job_queued(bridge):
    rt, client, sb = bridge(**ENV)
    policy = Policy(max_attempts=3, budget_s=60.0, backoff=Backoff(base_s=0.2, cap_s=1.0))
    executor = Executor(rt.jobs, LiveApis(rt.accounts), policy, rt.leases, chain_s=0.0)
    first, dispatch, second = first_then_second(rt, client)
    assert executor.run(first, dispatch) == "succeeded"
    assert client.get(second).status == "queued"
    assert rt.redis.zscore(Keys(client.settings.key_prefix).lane("normal"), second) is not None
    assert calls_to(sb, "/Vehicles") == 1


def test_a_draining_worker_takes_no_next_job(bridge):
    rt, client, sb = bridge(**ENV)
    first, dispatch, second = first_then_second(rt, client)
    rt.draining.set()  # what worker_shutting_down does
    assert rt.executor.run(first, dispatch) == "succeeded"
    assert client.get(second).status == "queued"
    assert rt.redis.zscore(Keys(client.settings.key_prefix).lane("normal"), second) is not None
    assert calls_to(sb, "/Vehicles") == 1


# -- the account's limiter state (issue 17): what the rare paths write, the take reads -----------


def test_a_take_honours_the_pause_and_the_learned_limit_the_limiter_writes(bridge):
    """The pause after a 429 and the limit the API stated reach the take (one HMGET of the state), and
    are also written where a worker of the previous version reads them during a rolling upgrade."""
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    first = claimed(rt, client, read(0))
    second = claimed(rt, client, read(1), owner="w2")
    waiting = client.submit(read(2))
    rt.limiter.pause(5)
    assert rt.redis.get(keys.limiter_pause()) == rt.redis.hget(keys.limiter_state(), "pause")

    paused = finish(rt, first, take=TakeNext("w3", LEASE_MS))

    assert paused.taken is None and rt.redis.zscore(keys.lane("normal"), waiting) is not None
    due = rt.redis.zscore(keys.ready, "default")
    assert due is not None and due == int(rt.redis.hget(keys.limiter_state(), "pause"))  # due when the pause ends
    rt.redis.hdel(keys.limiter_state(), "pause")
    rt.redis.delete(keys.limiter_pause())
    assert rt.limiter.observe(Statement("x", 2)) == 2  # two calls a window: both started already
    assert rt.redis.hget(keys.limiter_learned(), "h_limit") == b"2"  # for the previous version's workers

    held = finish(rt, second, take=TakeNext("w3", LEASE_MS))

    assert held.taken is None and rt.redis.zscore(keys.lane("normal"), waiting) is not None
    due = rt.redis.zscore(keys.ready, "default")
    assert due is not None and due > redis_now_ms(rt) + QUOTA.window_ms / 2  # at the window's wall
