"""The counts of API calls and finished jobs go through a pending list (issue 17), never out of sight.

A script that finishes or parks a job pushes its counts as one entry on
``keys.stats_pending`` and folds the list into the hashes when the push makes
it ``FOLD_AT`` long; every reader (``Metrics.snapshot``, ``/metrics``, ``/ui``'s
chart) folds first, in the same step. So each test checks that counts did wait
in the list (without the feature there is none) and that the reader saw them
all at once (without its fold it would miss them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from optimum_bridge.clock import Clock
from optimum_bridge.ingress.auth import Caller
from optimum_bridge.ingress.health import render_metrics
from optimum_bridge.ingress.ui.data import account_view, gather
from optimum_bridge.ingress.ui.security import Viewer
from optimum_bridge.keys import CALLS_PER_MINUTE_TTL_S, Keys
from optimum_bridge.process.metrics import FOLD_AT, Metrics
from optimum_bridge.process.runtime import Runtime
from tests.support import run

GET = {"method": "GET", "path": "/Vehicles"}


def person(i: int) -> dict[str, object]:
    """A POST, so no two are one shared call."""
    return {"method": "POST", "path": "/Persons", "body": {"firstName": f"P{i}", "lastName": "Moreau"}}


class At(Clock):
    """A clock standing at ``moment`` (it decides the per-minute hash a call is counted in)."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def pending(rt: Runtime) -> int:
    return int(rt.redis.llen(Keys(rt.settings.key_prefix).stats_pending))


def push(rt: Runtime, counts: tuple[str, ...]) -> None:
    """Counts pushed by ``reschedule.lua`` (which adds them whatever the job's state; this one is gone)."""
    assert not rt.jobs.reschedule("gone", "owner", account="default", delay_s=0, status="retrying", counts=counts)


def finish(rt: Runtime, client, n: int) -> int:
    """Submit and run ``n`` jobs (each finished by ``complete.lua``); the longest the pending list got."""
    longest = 0
    for job_id in client.submit_many([person(i) for i in range(n)]):
        assert run(rt, job_id) == "succeeded"
        longest = max(longest, pending(rt))
    return longest


def exposed(rt: Runtime) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample ``/metrics`` shows, by name and labels."""
    text = render_metrics(rt.redis, Keys(rt.settings.key_prefix), ["default"]).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


@pytest.mark.parametrize("n", [3, FOLD_AT + 5])
def test_every_finish_counted_is_in_the_snapshot_at_once(bridge, n):
    rt, client, _ = bridge()
    assert finish(rt, client, n) == min(n, FOLD_AT - 1)  # folded when a push made it FOLD_AT long
    assert pending(rt) == n % FOLD_AT  # one entry per finish since the last fold

    counters = Metrics(rt.redis, Keys(rt.settings.key_prefix)).snapshot()
    assert (counters["jobs:succeeded"], counters["acct:default:calls:201"], counters["calls:201"]) == (n, n, n)
    assert counters["latency_count"] == n
    assert pending(rt) == 0


@pytest.mark.parametrize("n", [3, FOLD_AT + 5])
def test_every_finish_counted_is_in_metrics_at_once(bridge, n):
    rt, client, _ = bridge()
    finish(rt, client, n)
    assert pending(rt) == n % FOLD_AT

    samples = exposed(rt)
    assert samples[("optimum_bridge_jobs_total", frozenset({("state", "succeeded")}))] == n
    assert samples[("optimum_bridge_api_calls_total", frozenset({("status", "201")}))] == n
    account = frozenset({("account", "default"), ("status", "201")})
    assert samples[("optimum_bridge_account_api_calls_total", account)] == n
    assert samples[("optimum_bridge_api_call_duration_seconds_count", frozenset())] == n
    assert pending(rt) == 0


def test_a_shared_call_counts_its_jobs_in_one_entry(bridge):
    rt, client, _ = bridge()
    leader, *followers = client.submit_many([GET, GET, GET])  # the two later ones join the first's call
    assert run(rt, leader) == "succeeded" and all(client.get(f).status == "succeeded" for f in followers)
    assert pending(rt) == 1  # one RPUSH for the call and its three jobs
    counters = Metrics(rt.redis, Keys(rt.settings.key_prefix)).snapshot()
    assert (counters["jobs:succeeded"], counters["calls:200"]) == (3, 1)


def test_float_amounts_are_summed_in_the_fold(bridge):
    rt, _, _ = bridge()
    metrics = Metrics(rt.redis, Keys(rt.settings.key_prefix)).for_account("default")
    seconds = [0.0123456 * (i + 1) for i in range(FOLD_AT + 7)]
    for s in seconds:
        push(rt, metrics.call_counts(200, s))
    assert pending(rt) == 7  # folded once at the bound; the last ones wait for the reader

    counters = metrics.snapshot()
    assert counters["latency_sum"] == pytest.approx(sum(round(s, 6) for s in seconds), abs=1e-9)
    assert counters["latency_count"] == FOLD_AT + 7 and counters["acct:default:calls:200"] == FOLD_AT + 7


def test_a_per_minute_hash_gets_its_ttl_when_its_field_is_new(bridge):
    rt, client, _ = bridge()
    keys = Keys(rt.settings.key_prefix)
    start = datetime(2026, 12, 6, 14, 0, 10, tzinfo=UTC)
    clock = At(start)
    metrics = Metrics(rt.redis, keys, clock=clock).for_account("default")
    hour_key = keys.calls_per_minute("default", int(start.timestamp()) // 3600)
    minute = str(int(start.timestamp()) // 60)

    push(rt, metrics.call_counts(200, 0.1))
    push(rt, metrics.call_counts(200, 0.1))
    assert not rt.redis.exists(hour_key)  # pending, not written yet
    metrics.snapshot()  # any reader folds
    assert rt.redis.hgetall(hour_key) == {minute.encode(): b"2"}
    assert CALLS_PER_MINUTE_TTL_S - 5 <= rt.redis.ttl(hour_key) <= CALLS_PER_MINUTE_TTL_S

    rt.redis.expire(hour_key, 100)
    push(rt, metrics.call_counts(200, 0.1))  # the same minute: the field is not new, the ttl stays
    metrics.snapshot()
    assert rt.redis.ttl(hour_key) <= 100

    clock.moment = start + timedelta(minutes=1)  # a new minute, in the same hour's hash
    push(rt, metrics.call_counts(200, 0.1))
    account_view(client, keys, "default")  # /ui's read folds too
    assert rt.redis.ttl(hour_key) > 100
    assert rt.redis.hget(hour_key, str(int(clock.moment.timestamp()) // 60)) == b"1"


def test_the_dashboard_chart_counts_calls_still_pending(bridge):
    rt, client, _ = bridge()
    metrics = Metrics(rt.redis, Keys(rt.settings.key_prefix)).for_account("default")
    for _ in range(5):
        push(rt, metrics.call_counts(200, 0.1))
    assert pending(rt) == 5
    assert account_view(client, Keys(rt.settings.key_prefix), "default").chart.total == 5
    assert pending(rt) == 0


def test_the_whole_dashboard_folds_once_for_every_chart(bridge):
    rt, client, _ = bridge()
    metrics = Metrics(rt.redis, Keys(rt.settings.key_prefix)).for_account("default")
    for _ in range(3):
        push(rt, metrics.call_counts(200, 0.1))
    viewer = Viewer(Caller(accounts=None), csrf="")
    (shown,) = gather(client, Keys(rt.settings.key_prefix), viewer).accounts
    assert shown.chart.total == 3 and pending(rt) == 0


def test_counts_written_at_once_by_a_previous_worker_add_up_with_pushed_ones(bridge):
    """An upgrade under way: a worker of the previous version adds its call's counts to the hashes
    at once (as ``Metrics.add`` does), beside one that pushes them; a reader sees both, once each."""
    rt, _, _ = bridge()
    metrics = Metrics(rt.redis, Keys(rt.settings.key_prefix)).for_account("default")
    for _ in range(3):
        metrics.add(metrics.call_counts(200, 0.5))  # the previous version's writes
        push(rt, metrics.call_counts(200, 0.25))
    assert pending(rt) == 3
    counters = metrics.snapshot()
    assert (counters["acct:default:calls:200"], counters["latency_count"]) == (6, 6)
    assert counters["latency_sum"] == pytest.approx(2.25)
    assert (counters["latency_bucket:0.5"], counters["latency_bucket:0.25"]) == (3, 3)


def test_an_entry_the_fold_cannot_read_is_skipped_and_the_others_kept(bridge):
    # E.g. pushed by a later version with another format: it must not abort the script that folds
    # (complete.lua, after the job is final) nor lose the entries beside it.
    rt, _, _ = bridge()
    keys = Keys(rt.settings.key_prefix)
    metrics = Metrics(rt.redis, keys).for_account("default")
    push(rt, metrics.call_counts(200, 0.1))
    rt.redis.rpush(keys.stats_pending, f"{keys.stats} calls:200 one -", f"{keys.stats} calls:200")
    push(rt, metrics.call_counts(200, 0.2))
    counters = metrics.snapshot()
    assert counters["acct:default:calls:200"] == 2 and counters["latency_count"] == 2
    assert pending(rt) == 0
