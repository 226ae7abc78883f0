"""The quota scheduler against a real Redis, in-process: lanes, slots given at the moment a call may
start, the quota's exact window, capacity, recovery and forecasts (spec §10, §11)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from optimum_bridge import BridgeClient
from optimum_bridge.clock import epoch_ms_ceil
from optimum_bridge.keys import EXECUTE_TASK, OPERATIONS_QUEUE, Keys
from optimum_bridge.process.kombu import message_args
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.quota.rate import STATE_FIELD
from tests.support import bridge_env, settings_from


@pytest.fixture
def sched(redis_server, prefix, sandbox, runtime) -> Callable[..., tuple[Runtime, BridgeClient]]:
    """Factory: an in-process runtime and a producer sharing one prefix (no worker: tests dispatch by hand)."""

    def build(**env: str) -> tuple[Runtime, BridgeClient]:
        sb = sandbox(quota=None)
        settings = settings_from(bridge_env(redis_server.url, prefix, sb, **env))
        rt = runtime(settings)
        return rt, BridgeClient(settings, client=rt.redis)

    return build


def dispatched_order(rt: Runtime) -> list[str]:
    """Job ids in the order the scheduler handed them to workers (the queue is LPUSHed)."""
    queue = Keys(rt.settings.key_prefix).queue(OPERATIONS_QUEUE)
    messages = reversed(rt.redis.lrange(queue, 0, -1))
    return [str((message_args(m, task=EXECUTE_TASK) or ["?"])[0]) for m in messages]


def op(path: str, priority: str = "normal") -> dict[str, object]:
    return {"method": "GET", "path": path, "priority": priority}


def test_the_oldest_job_of_the_highest_lane_goes_first(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    bulk = client.submit_many([op(f"/Vehicles/B{i}", "bulk") for i in range(3)])
    normal = client.submit_many([op(f"/Vehicles/N{i}") for i in range(2)])
    urgent = client.submit(op("/Vehicles/U", "urgent"))
    result = rt.dispatcher.run("default")
    assert result.given == 6 and result.outcome == "idle"
    assert dispatched_order(rt) == [urgent, *normal, *bulk]  # a job never waits for an older, lower one


def test_slots_come_one_per_interval_and_never_more_than_the_quota_in_a_window(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="5/s", BRIDGE_RATE_LIMIT_MARGIN_S="0")
    ids = client.submit_many([op(f"/Vehicles/V{i}") for i in range(12)])
    dispatcher, keys = rt.dispatcher, Keys(rt.settings.key_prefix)
    given_at: dict[str, float] = {}
    deadline = time.monotonic() + 10
    while len(given_at) < len(ids) and time.monotonic() < deadline:
        wait = dispatcher.run("default").next_in_s or 0.05
        for job_id in ids:
            if job_id not in given_at and rt.redis.zscore(keys.dispatched, job_id) is not None:
                given_at[job_id] = int(rt.jobs.field(job_id, "dispatched_at") or 0) / 1000
        time.sleep(min(wait, 0.05))
    starts = sorted(given_at.values())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 12
    assert min(gaps) >= 0.199  # paced: one slot every 1 s / 5, never a burst
    assert max(gaps) < 0.2 + 0.1  # and on time
    assert all(sum(1 for t in starts if s <= t < s + 1.0) <= 5 for s in starts)


def test_a_burst_after_idle_then_paced(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="10/s", BRIDGE_RATE_LIMIT_MARGIN_S="0", BRIDGE_RATE_BURST="4")
    client.submit_many([op(f"/Vehicles/V{i}") for i in range(6)])
    first = rt.dispatcher.run("default")
    assert first.given == 4 and first.outcome == "wait"  # the burst, then the pacer
    assert 0.05 <= first.next_in_s <= 0.1


def test_no_slot_is_given_beyond_the_workers_free_threads(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    rt.redis.set(keys.capacity, 2)
    client.submit_many([op(f"/Vehicles/V{i}") for i in range(5)])
    result = rt.dispatcher.run("default")
    assert (result.outcome, result.given) == ("busy", 2)
    assert rt.redis.zcard(keys.dispatched) == 2 and rt.redis.zcard(keys.lane("normal")) == 3


def test_a_pause_holds_every_slot(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    rt.limiter.pause(3)
    client.submit(op("/Vehicles"))
    result = rt.dispatcher.run("default")
    assert result.outcome == "wait" and result.given == 0 and 2.9 <= result.next_in_s <= 3.0


def test_a_lost_hand_off_and_a_dead_worker_send_the_job_back_to_its_lane(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    lost, dead = client.submit_many([op("/Vehicles/A"), op("/Vehicles/B")])
    rt.dispatcher.run("default")
    rt.redis.zadd(keys.dispatched, {lost: 0})  # its deadline passed: the message never reached a worker
    rt.redis.zrem(keys.dispatched, dead)
    rt.redis.zadd(keys.running, {dead: 0})  # taken by a worker that died: no lease renews it
    rt.redis.hset(keys.job(dead), mapping={"status": "running", "attempts": 1})
    assert sorted(rt.recovery.run()) == sorted([(lost, "handoff"), (dead, "lease")])
    assert rt.redis.zrange(keys.lane("normal"), 0, -1) == [lost.encode(), dead.encode()]  # their age kept
    assert client.get(dead).status == "retrying" and client.get(lost).status == "queued"
    assert rt.executor.run(lost, 1, chain=False) == "stale"  # the late message of the lost hand-off does nothing


def test_a_late_start_that_would_break_the_window_goes_back_to_its_lane(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="2/m", BRIDGE_RATE_LIMIT_MARGIN_S="0")
    keys = Keys(rt.settings.key_prefix)
    job_id = client.submit(op("/Vehicles"))
    rt.dispatcher.run("default")
    rt.redis.hset(keys.job(job_id), "dispatched_at", 1)  # its slot went by long ago...
    rt.redis.zadd(keys.limiter_log(), {"a": time.time() * 1000 - 1000, "b": time.time() * 1000 - 500})
    assert rt.executor.run(job_id, 1, chain=False) == "late"  # ... and two calls started since: it may not start now
    assert rt.redis.zrange(keys.lane("normal"), 0, -1) == [job_id.encode()]


def test_positions_and_estimates_follow_the_lanes(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="30/m")
    bulk = client.submit_many([op(f"/Vehicles/B{i}", "bulk") for i in range(3)])
    normal = client.submit(op("/Vehicles/N"))
    urgent = client.submit(op("/Vehicles/U", "urgent"))
    positions = {job_id: client.get(job_id).position for job_id in [*bulk, normal, urgent]}
    assert positions == {urgent: 0, normal: 1, bulk[0]: 2, bulk[1]: 3, bulk[2]: 4}
    read_from = time.monotonic()
    estimates = [client.get(job_id).estimated_start_at for job_id in [urgent, normal, *bulk]]
    reading = time.monotonic() - read_from  # the next slot is "now" for each read: reads drift the estimates
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(estimates)]  # type: ignore[operator]
    assert all(60.25 / 30 - 0.01 < gap < 60.25 / 30 + reading + 0.01 for gap in gaps)  # one slot interval apart
    rt.dispatcher.run("default")
    assert client.get(urgent).position is None or client.get(urgent).position == 0
    assert client.get(normal).position == 0  # the urgent one has its slot: the normal one is next


def test_a_batch_counts_its_jobs_and_forecasts_its_end(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    batch = client.submit_batch(
        [op("/Vehicles"), op("/Persons"), op("/Vehicles/ZZ-000-ZZ")],
        callback={"url": "http://127.0.0.1:9/hook"},
        metadata={"n": 1},
    )
    status = client.get_batch(batch.id)
    assert (status.status, status.total, status.counts.queued, status.metadata) == ("running", 3, 3, {"n": 1})
    assert status.estimated_done_at is not None
    assert client.batch_jobs(batch.id) == batch.job_ids
    rt.dispatcher.run("default")
    assert [rt.executor.run(job_id, 1, chain=False) for job_id in batch.job_ids] == ["succeeded", "succeeded", "failed"]
    done = client.get_batch(batch.id)
    assert (done.status, done.counts.succeeded, done.counts.failed, done.counts.queued) == ("done", 2, 1, 0)
    callbacks = rt.redis.lrange(Keys(rt.settings.key_prefix).queue("bridge.callbacks"), 0, -1)
    batch_messages = [m for m in callbacks if json.loads(m)["headers"]["task"] == "bridge.deliver_batch_callback"]
    assert len(batch_messages) == 1  # queued once, by the job that made the batch final


def test_a_call_about_to_leave_later_than_its_slot_is_held_back_if_the_window_is_full(sched, monkeypatch):
    """Between its claim and its request a worker may stall (a loaded host): the start is counted
    again right before the call leaves, and a call that would break the window is not sent."""
    rt, client = sched(OPTIMUM_RATE_LIMIT="2/m", BRIDGE_RATE_LIMIT_MARGIN_S="0")
    keys = Keys(rt.settings.key_prefix)
    job_id = client.submit(op("/Vehicles"))
    rt.dispatcher.run("default")
    stall = rt.jobs.mark_sent

    def stalled(*args, **kwargs):  # two more calls started while this worker stalled after its claim
        now = time.time() * 1000
        rt.redis.zadd(keys.limiter_log(), {"a": now - 300, "b": now - 200})
        return stall(*args, **kwargs)

    monkeypatch.setattr(rt.jobs, "mark_sent", stalled)
    assert rt.executor.run(job_id, 1, chain=False) == "deferred"
    status = client.get(job_id)
    assert (status.status, status.attempts, status.started_at) == ("queued", 0, None)
    assert rt.redis.zscore(keys.delayed(), job_id) is not None  # back to its lane when due, age kept
    assert rt.redis.zscore(keys.limiter_log(), f"{job_id}.1") is None  # its slot given back


def test_an_account_is_ready_while_it_has_work_and_scored_by_when_it_is_due(sched):
    """Spec §10a: the ready set holds the accounts with waiting work, at the time their next slot is due."""
    rt, client = sched(OPTIMUM_RATE_LIMIT="2/s", BRIDGE_RATE_LIMIT_MARGIN_S="0")
    keys = Keys(rt.settings.key_prefix)
    assert rt.redis.zscore(keys.ready, "default") is None  # nothing waits: not there, nothing to look at
    _, second = client.submit_many([op("/Vehicles/A"), op("/Vehicles/B")])
    assert rt.redis.llen(keys.wake) == 1  # the submission woke a dispatcher, once
    due_at = rt.redis.zscore(keys.ready, "default")
    assert due_at is not None and due_at <= time.time() * 1000 + 1
    result = rt.dispatcher.run()  # the due accounts, as a worker's dispatch loop serves them
    assert (result.outcome, result.given) == ("wait", 1)
    assert rt.redis.llen(keys.wake) == 0  # the call served every wake-up pushed before it
    assert result.next_in_s is not None and 0.4 < result.next_in_s <= 0.5  # the next slot: 1 s / 2
    next_at = rt.redis.zscore(keys.ready, "default")
    assert next_at is not None and next_at - due_at >= 400
    time.sleep(result.next_in_s)
    assert rt.dispatcher.run().given == 1 and rt.redis.zscore(keys.ready, "default") is None  # none left
    job = rt.jobs.claim(second, 1, "w", quota=rt.limiter.quota, account="default", lease_ms=5000)
    assert job.outcome == "ok"
    rt.jobs.reschedule(second, "w", account="default", delay_s=30.0, status="retrying")
    retry_at = rt.redis.zscore(keys.ready, "default")
    assert retry_at is not None and 29_000 < retry_at - time.time() * 1000 <= 30_000  # back at its retry's time


def test_an_account_whose_quota_redis_lost_is_served_once_stored_again(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    rt.dispatcher.run()  # publishes the quotas
    # e.g. a Redis restored from a snapshot older than the workers' start: neither copy of the quota
    rt.redis.delete(keys.quotas)
    rt.redis.hdel(keys.limiter_state(), STATE_FIELD)
    job_id = client.submit(op("/Vehicles"))
    assert rt.dispatcher.run().outcome == "more"  # stored again, and the account put back
    assert rt.redis.hexists(keys.quotas, "default") and rt.redis.hexists(keys.limiter_state(), STATE_FIELD)
    rt.dispatcher.run()
    assert rt.redis.zscore(keys.dispatched, job_id) is not None


def test_a_quota_over_1000_a_second_gives_several_slots_in_one_millisecond(sched):
    """The pacer's interval is not rounded up to 1 ms: 5,000/s is not capped at 1,000 calls a second."""
    rt, client = sched(OPTIMUM_RATE_LIMIT="5000/s")
    client.submit_many([op(f"/Vehicles/{i}") for i in range(20)])
    rt.redis.set(Keys(rt.settings.key_prefix).capacity, 100)  # threads for every one of them
    given = rt.dispatcher.run("default").given
    assert given >= 4, given  # one call of the script, one millisecond: 5 slots' share (was 1)


def test_the_limiters_starts_are_those_of_the_window_though_the_log_keeps_older_ones(sched):
    # The log has no TTL and is trimmed only when full (issue 17): an old start may stay in it.
    rt, _ = sched(OPTIMUM_RATE_LIMIT="2/s", BRIDGE_RATE_LIMIT_MARGIN_S="0")
    keys = Keys(rt.settings.key_prefix)
    seconds, micros = rt.redis.time()
    now = int(seconds) * 1000 + int(micros) // 1000
    rt.redis.zadd(keys.limiter_log(), {"old": now - 5000, "recent": now - 100})
    assert rt.limiter.starts() == [now - 100]


# -- the account's limiter state (issue 17): one HMGET per slot, the delayed set looked at when due ----


def redis_ms(rt: Runtime) -> int:
    seconds, micros = rt.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def dispatched_at(rt: Runtime, job_id: str, *, within_s: float) -> int:
    """Serve the due accounts, as a dispatch loop does, until ``job_id`` is given its slot: when (Redis ms)."""
    keys = Keys(rt.settings.key_prefix)
    deadline = time.monotonic() + within_s
    while rt.redis.zscore(keys.dispatched, job_id) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} was not given a slot within {within_s} s")
        rt.dispatcher.run()
        time.sleep(0.005)
    return int(rt.jobs.field(job_id, "dispatched_at") or 0)


def test_a_retry_parked_just_after_a_look_at_the_delayed_set_goes_back_to_its_lane_at_its_time(sched):
    """The delayed set is looked at only once the account's hint has passed (at most 1 s after the last
    look); parking a retry lowers the hint, so the retry is back in its lane at its time, ahead of the
    lower lanes."""
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    state = keys.limiter_state()
    retried = client.submit(op("/Vehicles/R"))
    before = redis_ms(rt)
    rt.dispatcher.run("default")  # its slot; the delayed set looked at (empty): the next look 1 s on
    assert int(rt.redis.hget(state, "look_delayed")) >= before + 1000
    assert rt.jobs.claim(retried, 1, "w", quota=rt.limiter.quota, account="default", lease_ms=5000).outcome == "ok"
    rt.jobs.reschedule(retried, "w", account="default", delay_s=0.1, status="retrying")
    due = rt.redis.zscore(keys.delayed(), retried)
    assert due is not None and int(rt.redis.hget(state, "look_delayed")) == due  # lowered to the retry's time
    bulk = client.submit(op("/Vehicles/B", "bulk"))
    rt.redis.delete(keys.queue(OPERATIONS_QUEUE))
    while redis_ms(rt) < due:
        time.sleep(0.01)
    assert rt.dispatcher.run("default").given == 2
    assert dispatched_order(rt) == [retried, bulk]  # strict priority: the retry was in its lane in time


def test_a_deferral_parked_by_a_previous_version_still_starts_on_time_on_an_idle_account(sched):
    """A producer of the previous version parks a not_before job without lowering the account's hint:
    an account with nothing else waiting moves it to its lane when it is due all the same."""
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    state = keys.limiter_state()
    client.submit(op("/Vehicles/A"))
    rt.dispatcher.run("default")  # looked at the delayed set: the next look 1 s on
    hint = rt.redis.hget(state, "look_delayed")
    not_before = epoch_ms_ceil(datetime.now(UTC) + timedelta(milliseconds=300))
    late = client.submit({**op("/Vehicles/L"), "not_before": datetime.fromtimestamp(not_before / 1000, UTC)})
    assert int(rt.redis.hget(state, "look_delayed")) == not_before  # this version's submit.lua lowers the hint
    rt.redis.hset(state, "look_delayed", hint)  # what the previous version's submit.lua leaves: the hint as it was
    assert int(hint) > not_before  # the hint hides it
    started = dispatched_at(rt, late, within_s=3)
    assert not_before <= started <= not_before + 100  # on time, not at the next look


def test_a_deferral_parked_by_a_previous_version_is_at_most_a_second_late_on_a_busy_account(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="10/s", BRIDGE_RATE_LIMIT_MARGIN_S="0")
    keys = Keys(rt.settings.key_prefix)
    state = keys.limiter_state()
    client.submit_many([op(f"/Vehicles/B{i}", "bulk") for i in range(40)])  # 4 s of backlog
    rt.dispatcher.run("default")  # looked at the delayed set: the next look 1 s on
    hint = rt.redis.hget(state, "look_delayed")
    not_before = epoch_ms_ceil(datetime.now(UTC) + timedelta(milliseconds=100))
    late = client.submit({**op("/Vehicles/U", "urgent"), "not_before": datetime.fromtimestamp(not_before / 1000, UTC)})
    rt.redis.hset(state, "look_delayed", hint)  # as the previous version's submit.lua leaves it
    started = dispatched_at(rt, late, within_s=4)
    assert not_before <= started <= int(hint) + 100 + 50  # by the next look (1 s at most) and its slot (100 ms)
    assert started <= not_before + 1000 + 100 + 50


def test_an_account_published_by_the_previous_version_is_served_and_its_quota_copied_once(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    rt.dispatcher.run()  # publishes the quotas: both copies
    stored = rt.redis.hget(keys.quotas, "default")
    assert stored is not None and rt.redis.hget(keys.limiter_state(), STATE_FIELD) == stored
    rt.redis.delete(keys.limiter_state())  # a worker of the previous version wrote the quotas hash only
    job_id = client.submit(op("/Vehicles"))
    assert rt.dispatcher.run("default").given == 1
    assert rt.redis.zscore(keys.dispatched, job_id) is not None
    assert rt.redis.hget(keys.limiter_state(), STATE_FIELD) == stored  # copied, with the start's pacer
    assert rt.redis.pttl(keys.limiter_state()) == -1  # it lives and dies with its account


def test_the_pacer_and_the_pause_live_in_the_state_and_the_pause_where_the_previous_version_reads_it(sched):
    rt, client = sched(OPTIMUM_RATE_LIMIT="5/s", BRIDGE_RATE_LIMIT_MARGIN_S="0")
    keys = Keys(rt.settings.key_prefix)
    client.submit_many([op("/Vehicles/A"), op("/Vehicles/B")])
    first = rt.dispatcher.run("default")
    assert first.given == 1 and first.next_in_s is not None and 0.15 < first.next_in_s <= 0.2  # paced
    assert rt.redis.hget(keys.limiter_state(), "tat") is not None and not rt.redis.exists(keys.limiter_tat())
    rt.limiter.pause(3)
    pause = int(rt.redis.hget(keys.limiter_state(), "pause"))
    assert int(rt.redis.get(keys.limiter_pause())) == pause  # a worker of the previous version stops too
    time.sleep(first.next_in_s)
    held = rt.dispatcher.run("default")
    assert held.given == 0 and held.next_in_s is not None and 2.5 < held.next_in_s <= 3.0
    assert rt.limiter.paused_for() > 2.5
