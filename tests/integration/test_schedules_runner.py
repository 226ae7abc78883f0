"""Schedules on Redis (spec §15), in-process runners: one batch per tick, missed and overlap policies,
pause, the accounts file's schedules, the outlook. Real workers: tests/test_schedules_workers.py."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from optimum_bridge.keys import Keys, text
from optimum_bridge.schedules.model import Schedule
from optimum_bridge.schedules.outlook import describe
from optimum_bridge.schedules.runner import ScheduleRunner
from optimum_bridge.schedules.store import Defined, ScheduleStore, from_ms, to_ms
from tests.support import wait_until

TRIPS = {"method": "GET", "path": "/Vehicles/{{ tick | date('%S') }}"}


def every(period: str = "1s", **fields: Any) -> Schedule:
    return Schedule.model_validate({"every": period, "operations": [TRIPS], **fields})


def outcomes(rt: Any, name: str) -> dict[int, str]:
    """Every claimed tick of ``name`` (ms) and what it made."""
    keys = Keys(rt.settings.key_prefix)
    found = {}
    for key in rt.redis.scan_iter(match=f"{keys.schedule(name)}:tick:*", count=1000):
        found[int(text(key).rsplit(":", 1)[1])] = text(rt.redis.get(key))
    return dict(sorted(found.items()))


@pytest.fixture
def runners(bridge: Callable[..., Any]) -> tuple[Any, Any, Callable[[], ScheduleRunner]]:
    rt, client, _ = bridge()

    def build() -> ScheduleRunner:
        return ScheduleRunner(ScheduleStore(rt.redis, rt.keys), client)

    return rt, client, build


def test_two_runners_make_one_batch_per_tick_and_miss_none(runners: Any) -> None:
    rt, client, build = runners
    first, second = build(), build()
    first.store.put("pulse", every("1s", overlap="queue", metadata={"erp": "acme"}))  # no worker runs them
    start = first.store.now()

    def four_ticks() -> bool:
        for runner in (first, second, second, first):  # both see every due tick, in both orders
            runner.run()
        return len(outcomes(rt, "pulse")) >= 4

    wait_until(four_ticks, timeout=20, interval=0.05, what="4 ticks")
    made = outcomes(rt, "pulse")
    ticks = list(made)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [1000] * (len(ticks) - 1)  # none missed
    assert ticks[0] == to_ms(every("1s").ticks.after(start))
    assert len(set(made.values())) == len(made)  # one batch each
    status = client.get_batch(made[ticks[0]])
    assert status.total == 1
    assert status.metadata == {
        "erp": "acme",
        "schedule": "pulse",
        "tick": from_ms(ticks[0]).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    [job] = client.batch_jobs(status.id)
    assert client.get(job).priority == "bulk"


def _outage(rt: Any, store: ScheduleStore, name: str, *, ticks_ago: int) -> int:
    """As if no worker had looked for a minute, with ``name`` due ``ticks_ago`` ticks back; the latest tick."""
    now = store.now()
    schedule = store.get(name)
    assert schedule is not None
    latest = schedule.schedule.ticks.at_or_before(now)
    keys = Keys(rt.settings.key_prefix)
    rt.redis.set(keys.schedules_seen, to_ms(now - timedelta(minutes=1)))
    rt.redis.zadd(keys.schedules_due, {name: to_ms(latest - timedelta(seconds=10 * (ticks_ago - 1)))})
    return to_ms(latest)


@pytest.mark.parametrize("missed", ["skip", "latest"])
def test_ticks_missed_while_no_worker_ran(runners: Any, missed: str) -> None:
    rt, _, build = runners
    runner = build()
    runner.store.put("nightly", every("10s", missed=missed))
    latest = _outage(rt, runner.store, "nightly", ticks_ago=3)
    runner.run()
    runner.run()
    made = outcomes(rt, "nightly")
    if missed == "skip":
        assert made == {}
    else:
        assert list(made) == [latest]
    assert runner.store.next_tick_ms("nightly") == latest + 10_000  # and on from there


@pytest.mark.parametrize("overlap", ["skip", "queue"])
def test_a_tick_while_the_previous_run_runs(runners: Any, overlap: str) -> None:
    rt, client, build = runners
    runner = build()
    runner.store.put("sync", every("1s", overlap=overlap))
    first = runner.run_now("sync")  # no worker: its batch stays running
    assert not client.get_batch(first).finished
    wait_until(lambda: runner.run() and len(outcomes(rt, "sync")) >= 2, timeout=10, what="the next tick")
    second = list(outcomes(rt, "sync").values())[1]
    if overlap == "skip":
        assert second == "skipped: the previous run still runs"
    else:
        assert client.get_batch(second).total == 1


def test_a_paused_schedule_lets_its_ticks_pass(runners: Any) -> None:
    rt, _, build = runners
    runner = build()
    runner.store.put("sync", every("1s"))
    runner.store.set_paused("sync", True)
    before = runner.store.next_tick_ms("sync")
    wait_until(lambda: runner.run() and runner.store.next_tick_ms("sync") != before, timeout=10, what="a tick")
    assert outcomes(rt, "sync") == {}


def test_the_accounts_file_schedules_keep_their_next_tick_across_restarts(runners: Any) -> None:
    rt, _, _ = runners
    store = ScheduleStore(rt.redis, rt.keys)
    nightly = Schedule.model_validate({"cron": "0 2 * * *", "timezone": "Europe/Paris", "operations": [TRIPS]})
    store.sync_file({"nightly": nightly})
    rt.redis.zadd(Keys(rt.settings.key_prefix).schedules_due, {"nightly": 1000})  # a tick long past
    store.sync_file({"nightly": nightly})  # a restart: unchanged, so its missed tick is still due
    assert store.next_tick_ms("nightly") == 1000
    store.put("adhoc", every("1h"))
    store.sync_file({})  # removed from the file: gone, the API's one stays
    assert list(store.all()) == ["adhoc"]


def test_the_outlook_forecasts_the_next_run_from_the_last_runs_size() -> None:
    schedule = Schedule.model_validate({"every": "5m", "timezone": "Europe/Paris", "operations": [TRIPS]})
    now = from_ms(1_800_000_000_000)
    state = {"last_tick": "1799999700000", "last_batch": "b1", "last_size": "301"}
    view = describe("sync", Defined(schedule=schedule), state, now=now, next_ms=None, interval_s=2.0)
    assert [tick.utc for tick in view.next_ticks] == [now + timedelta(minutes=5 * i) for i in range(1, 6)]
    assert view.next_ticks[0].local.utcoffset() == timedelta(hours=1)
    assert view.estimated_done_at == now + timedelta(minutes=5, seconds=602)
    assert (
        view.warning
        == "a run of 301 calls takes 10 min at account 'default''s quota, longer than the 5 min between ticks"
    )


def test_a_schedule_that_no_longer_loads_leaves_the_others_ticking(runners: Any) -> None:
    rt, _, build = runners
    runner = build()
    runner.store.put("good", every("1s", overlap="queue"))
    keys = Keys(rt.settings.key_prefix)
    rt.redis.hset(keys.schedules, "broken", '{"schedule": {"every": "1s"}}')  # e.g. written by another version
    rt.redis.zadd(keys.schedules_due, {"broken": 0})
    wait_until(lambda: runner.run() and len(outcomes(rt, "good")) >= 2, timeout=10, what="2 ticks of the good one")
    assert outcomes(rt, "broken") == {}
    assert list(runner.store.all()) == ["good"]  # listed without it (GET /v1/schedules, /ui, the CLI)


def test_a_tick_whose_worker_died_before_its_batch_is_made_by_another(runners: Any) -> None:
    rt, client, _ = runners
    keys = Keys(rt.settings.key_prefix)
    store = ScheduleStore(rt.redis, rt.keys)
    store.put("sync", every("1h"))
    next_ms = store.next_tick_ms("sync")
    assert next_ms is not None
    now_s = store.now().timestamp()
    rt.redis.zadd(keys.workers, {"dead@host:1": now_s - 60, "alive@host:2": now_s})
    for worker in ("dead@host:1", "alive@host:2"):  # each claims a tick, then makes nothing (SIGKILL, or still busy)
        expected = store.next_tick_ms("sync") or 0
        assert store.claim(
            "sync", expected_ms=expected, tick_ms=expected, next_ms=expected + 3_600_000, ttl_s=60, owner=worker
        )
    dead_tick, alive_tick = next_ms, next_ms + 3_600_000
    rescuer = ScheduleRunner(store, client, owner="rescuer@host:3")
    rt.redis.zadd(keys.schedules_making, {f"sync|{dead_tick}": 0, f"sync|{alive_tick}": 0})  # claimed long ago
    rescuer.run()
    made = outcomes(rt, "sync")
    assert client.get_batch(made[dead_tick]).metadata["schedule"] == "sync"  # taken over, made once
    assert made[alive_tick] == "claimed:alive@host:2"  # its worker is alive: left to it
    rescuer.run()
    assert outcomes(rt, "sync")[dead_tick] == made[dead_tick]  # not made twice
    assert rt.redis.zrange(keys.schedules_making, 0, -1) == [f"sync|{alive_tick}".encode()]
