"""Schedules with real workers (spec §15): exactly one batch per tick across workers and their deaths, the
missed and overlap policies, and the nightly sync (source + for_each) against the sandbox fleet."""

from __future__ import annotations

import itertools
import json
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from optimum_bridge import BridgeClient
from optimum_bridge.keys import Keys, text
from optimum_bridge.schedules.model import Schedule
from optimum_bridge.schedules.runner import OUTAGE_S, ScheduleRunner
from optimum_bridge.schedules.store import ScheduleStore, from_ms, to_ms
from tests.support import bridge_env, run_cli, settings_from, wait_until

VEHICLES = {"method": "GET", "path": "/Vehicles"}
NIGHTLY_TRIPS = {
    "timezone": "Europe/Paris",
    "source": VEHICLES,
    "for_each": "[?status != 'OUT_FLEET'].registrationNumber",
    "operation": {
        "method": "GET",
        "path": "/Geolocation/Trips",
        "query": {
            "registrationNumber": "{{ item }}",
            "startDate": "{{ tick | date('%Y-%m-%d', days=-1) }}T00:00:00",
            "endDate": "{{ tick | date('%Y-%m-%d') }}T00:00:00",
        },
    },
}


class Stack:
    """A sandbox, the bridge's settings and a client, and the schedules' store, under the test's prefix."""

    def __init__(self, redis_server: Any, prefix: str, sandbox: Any, **env: str) -> None:
        self.sandbox = sandbox(quota=None)
        self.env = bridge_env(redis_server.url, prefix, self.sandbox, **{"OPTIMUM_RATE_LIMIT": "50/s", **env})
        self.settings = settings_from(self.env)
        self.redis = redis_server.client()
        self.keys = Keys(prefix)
        self.client = BridgeClient(self.settings, client=self.redis)
        self.store = ScheduleStore(self.redis, self.keys)

    def outcomes(self, name: str) -> dict[int, str]:
        """Every claimed tick of ``name`` (ms) and what it made."""
        found = {}
        for key in self.redis.scan_iter(match=f"{self.keys.schedule(name)}:tick:*", count=1000):
            found[int(text(key).rsplit(":", 1)[1])] = text(self.redis.get(key) or b"")
        return dict(sorted(found.items()))

    def batches_by_tick(self, name: str) -> Counter[str]:
        """How many batches name each tick of ``name`` in their metadata (counted from the batches themselves)."""
        counts: Counter[str] = Counter()
        for key in self.redis.scan_iter(match=f"{self.keys.prefix}batch:*", count=1000):
            if text(key).endswith(":jobs"):
                continue
            status = self.client.get_batch(text(key).rsplit(":", 1)[1])
            if status.metadata.get("schedule") == name:
                counts[str(status.metadata["tick"])] += 1
        return counts


@pytest.fixture
def stack(redis_server: Any, prefix: str, sandbox: Any) -> Any:
    def build(**env: str) -> Stack:
        return Stack(redis_server, prefix, sandbox, **env)

    return build


def _every(period: str, **fields: Any) -> Schedule:
    return Schedule.model_validate({"every": period, "operations": [VEHICLES], **fields})


def test_three_workers_make_exactly_one_batch_per_tick(stack: Any, workers: Any) -> None:
    s = stack()
    running = [workers(s.env, concurrency=2) for _ in range(3)]
    s.store.put("pulse", _every("2s", overlap="queue"))
    wait_until(lambda: len(s.outcomes("pulse")) >= 5, timeout=60, interval=0.5, what="5 ticks")
    running[0].stop(signal.SIGKILL)  # one dies mid-run (a tick it claimed is made by another): the others go on
    wait_until(lambda: len(s.outcomes("pulse")) >= 10, timeout=60, interval=0.5, what="10 ticks (20 s)")
    wait_until(lambda: all(len(o) == 32 for o in s.outcomes("pulse").values()), timeout=30, what="every batch made")
    made = s.outcomes("pulse")
    ticks = list(made)
    assert [b - a for a, b in itertools.pairwise(ticks)] == [2000] * (len(ticks) - 1), made  # none missed
    assert all(len(outcome) == 32 for outcome in made.values()), made  # each a batch id
    wait_until(lambda: len(s.batches_by_tick("pulse")) >= len(ticks), timeout=10, what="the batches")
    counts = s.batches_by_tick("pulse")
    assert {from_ms(tick).strftime("%Y-%m-%dT%H:%M:%SZ") for tick in ticks} <= set(counts)
    assert set(counts.values()) == {1}, counts  # exactly one batch per tick, counted by tick
    first = s.client.wait_batch(made[ticks[0]], timeout=30)
    assert (first.counts.succeeded, first.metadata["schedule"]) == (1, "pulse")


def test_ticks_missed_while_every_worker_was_down(stack: Any, workers: Any) -> None:
    s = stack()
    s.store.put("skipper", _every("2s", overlap="queue"))
    s.store.put("catcher", _every("2s", overlap="queue", missed="latest"))
    running = [workers(s.env, concurrency=2) for _ in range(2)]
    wait_until(lambda: min(len(s.outcomes(n)) for n in ("skipper", "catcher")) >= 2, timeout=30, what="2 ticks each")
    for worker in running:
        worker.stop(signal.SIGKILL)
    last_seen = int(s.redis.get(s.keys.schedules_seen))
    before = {name: set(s.outcomes(name)) for name in ("skipper", "catcher")}
    # Down long enough to be an outage (no worker looked for OUTAGE_S), so at least 5 ticks of 2 s fell.
    wait_until(lambda: to_ms(s.store.now()) > last_seen + OUTAGE_S * 1000 + 500, timeout=30, what="an outage")
    workers(s.env, concurrency=2)
    wait_until(lambda: s.redis.get(s.keys.schedules_outage) is not None, timeout=30, what="the outage seen")
    outage_from, outage_to = (int(part) for part in text(s.redis.get(s.keys.schedules_outage)).split(":"))
    assert outage_from == last_seen
    wait_until(lambda: max(s.outcomes("skipper")) > outage_to, timeout=30, what="a tick after the restart")
    wait_until(lambda: max(s.outcomes("catcher")) > outage_to, timeout=30, what="a tick after the restart")
    fell = range(max(max(before["skipper"]), max(before["catcher"])) + 1, outage_to + 1)
    skipped = [tick for tick in s.outcomes("skipper") if tick in fell and tick not in before["skipper"]]
    caught = [tick for tick in s.outcomes("catcher") if tick in fell and tick not in before["catcher"]]
    assert skipped == []  # skip: none for the ticks that fell while no worker ran
    latest = _every("2s").ticks.at_or_before(from_ms(outage_to))
    assert caught == [to_ms(latest)]  # latest: one, for the latest of them


def test_overlap_skip_leaves_out_ticks_while_a_slow_run_runs(stack: Any, workers: Any) -> None:
    s = stack(OPTIMUM_RATE_LIMIT="1/s")  # 5 calls a run: about 5 s a run, ticks every 2 s
    workers(s.env, concurrency=2)
    trips = [{"method": "GET", "path": f"/Vehicles/AB-{i:03d}-CD"} for i in range(5)]
    s.store.put("slow", Schedule.model_validate({"every": "2s", "operations": trips}))
    wait_until(
        lambda: sum(len(o) == 32 for o in s.outcomes("slow").values()) >= 3, timeout=60, interval=0.5, what="3 runs"
    )
    made = s.outcomes("slow")
    assert "skipped: the previous run still runs" in made.values(), made
    runs = [s.client.get_batch(o) for o in made.values() if len(o) == 32]
    for earlier, later in itertools.pairwise(runs):  # never two runs at once
        assert earlier.finished_at is not None and earlier.finished_at <= later.submitted_at


def test_the_nightly_sync_fetches_yesterdays_trips_of_every_vehicle_in_the_fleet(stack: Any, workers: Any) -> None:
    s = stack()
    workers(s.env, concurrency=4)
    s.store.put("nightly", Schedule.model_validate({"cron": "0 2 * * *", **NIGHTLY_TRIPS}))
    runner = ScheduleRunner(s.store, s.client)  # as POST /v1/schedules/nightly:run does
    source = runner.run_now("nightly")
    assert source.startswith("source:")
    tick = max(s.outcomes("nightly"))
    wait_until(lambda: len(s.outcomes("nightly")[tick]) == 32, timeout=60, what="the trips batch")
    batch = s.client.wait_batch(s.outcomes("nightly")[tick], timeout=60)
    fleet = s.sandbox.app.state.sandbox.fleet.vehicles
    in_fleet = sorted(v.registration_number for v in fleet if v.status != "OUT_FLEET")
    assert len(in_fleet) < len(fleet)  # the sandbox fleet has vehicles out of it
    jobs = [s.client.get(job_id) for job_id in s.client.batch_jobs(batch.id)]
    assert sorted(str(job.operation.query["registrationNumber"]) for job in jobs) == in_fleet
    today = from_ms(tick).astimezone(ZoneInfo("Europe/Paris")).date()
    yesterday = today - timedelta(days=1)
    windows = {(job.operation.query["startDate"], job.operation.query["endDate"]) for job in jobs}
    assert windows == {(f"{yesterday}T00:00:00", f"{today}T00:00:00")}
    assert (batch.counts.succeeded, batch.total) == (len(in_fleet), len(in_fleet))  # the sandbox took each window
    assert batch.metadata["tick"] == datetime.fromtimestamp(tick / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.processes
def test_the_cli_lists_shows_runs_pauses_and_resumes(stack: Any) -> None:
    s = stack()
    hourly = {"cron": "0 * * * *", "timezone": "Europe/Paris", "operations": [VEHICLES]}
    s.store.put("hourly", Schedule.model_validate(hourly))
    listed = run_cli(s.env, "schedules", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("hourly (api, 0 * * * *, account default): next ")
    assert "never ran" in listed.stdout
    ran = run_cli(s.env, "schedules", "run", "hourly")
    assert ran.returncode == 0, ran.stderr
    batch_id = ran.stdout.strip()
    assert s.client.get_batch(batch_id).metadata["schedule"] == "hourly"
    shown = json.loads(run_cli(s.env, "schedules", "show", "hourly").stdout)
    assert shown["last_run"]["batch_id"] == batch_id and len(shown["next_ticks"]) == 5
    assert run_cli(s.env, "schedules", "pause", "hourly").stdout == "hourly: paused\n"
    assert ": paused;" in run_cli(s.env, "schedules", "list").stdout
    assert run_cli(s.env, "schedules", "resume", "hourly").returncode == 0
    assert s.store.state("hourly").get("paused") is None
    missing = run_cli(s.env, "schedules", "show", "nope")
    assert (missing.returncode, missing.stderr) == (1, "optimum-bridge: no schedule 'nope'\n")
