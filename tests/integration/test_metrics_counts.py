"""The counts of an API call (issue 17): the write path leaves the totals to readers, ``/metrics`` still shows them.

``Metrics.call_counts`` writes the account's ``calls:<status>`` only and no
``latency_count``; ``render_metrics`` (what ``/metrics`` returns) derives the
totals. A stats hash of the version that wrote the totals is upgraded once
without counting any call twice.
"""

from __future__ import annotations

import redis
from prometheus_client.parser import text_string_to_metric_families

from optimum_bridge.ingress.health import render_metrics
from optimum_bridge.keys import Keys
from optimum_bridge.process.metrics import COUNTS_VERSION, Metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exposed(client: redis.Redis, keys: Keys) -> Samples:
    """Every sample ``/metrics`` shows, by name and labels."""
    text = render_metrics(client, keys, ["acme", "beta"]).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def calls(samples: Samples, status: str, account: str | None = None) -> float:
    if account is None:
        return samples.get(("optimum_bridge_api_calls_total", frozenset({("status", status)})), 0.0)
    labels = frozenset({("account", account), ("status", status)})
    return samples.get(("optimum_bridge_account_api_calls_total", labels), 0.0)


def histogram_count(samples: Samples) -> tuple[float, float]:
    """The histogram's count and its +Inf bucket."""
    count = samples[("optimum_bridge_api_call_duration_seconds_count", frozenset())]
    return count, samples[("optimum_bridge_api_call_duration_seconds_bucket", frozenset({("le", "+Inf")}))]


def fields_written(counts: tuple[str, ...]) -> set[str]:
    """The fields of ``call_counts``'s quadruples (after the pending list and its bound)."""
    return {counts[i + 1] for i in range(2, len(counts), 4)}


def test_a_call_of_an_account_writes_no_total(redis_server, prefix):
    metrics = Metrics(redis_server.client(), Keys(prefix))
    written = fields_written(metrics.for_account("acme").call_counts(200, 0.07))
    assert "calls:200" not in written and "latency_count" not in written
    assert {"acct:acme:calls:200", "latency_bucket:0.1", "latency_sum"} <= written
    assert {"calls:200", "latency_bucket:0.1", "latency_sum"} <= fields_written(metrics.call_counts(200, 0.07))


def test_metrics_shows_the_totals_the_write_path_leaves_out(redis_server, prefix):
    client, keys = redis_server.client(), Keys(prefix)
    metrics = Metrics(client, keys)
    assert metrics.upgrade() and not metrics.upgrade()  # once
    for _ in range(3):
        metrics.for_account("acme").observe_call(200, 0.07)
    metrics.for_account("beta").observe_call(200, 40.0)
    metrics.for_account("beta").observe_call(429, 0.2)
    metrics.observe_call("error", 0.01)  # no account: counted in the total only

    samples = exposed(client, keys)
    assert (calls(samples, "200"), calls(samples, "429"), calls(samples, "error")) == (4, 1, 1)
    assert (calls(samples, "200", "acme"), calls(samples, "200", "beta"), calls(samples, "429", "beta")) == (3, 1, 1)
    assert histogram_count(samples) == (6, 6)
    assert metrics.snapshot()["calls:200"] == 4 and metrics.snapshot()["latency_count"] == 6


def test_counts_of_the_previous_version_are_not_counted_twice(redis_server, prefix):
    client, keys = redis_server.client(), Keys(prefix)
    # The previous version: every account's call in calls:<status> too; one 200 without an account.
    client.hset(
        keys.stats,
        mapping={
            "calls:200": 10, "acct:acme:calls:200": 6, "acct:beta:calls:200": 3, "calls:429": 2,
            "acct:beta:calls:429": 2, "latency_bucket:0.1": 11, "latency_bucket:inf": 1, "latency_count": 12,
        },
    )  # fmt: skip
    before = exposed(client, keys)
    assert (calls(before, "200"), calls(before, "429"), histogram_count(before)) == (10, 2, (12, 12))

    metrics = Metrics(client, keys)
    assert metrics.upgrade()
    assert exposed(client, keys) == before
    assert client.hget(keys.stats, COUNTS_VERSION) == b"2"
    metrics.for_account("acme").observe_call(200, 0.07)
    metrics.observe_call(200, 0.07)
    after = exposed(client, keys)
    assert (calls(after, "200"), calls(after, "200", "acme"), calls(after, "429")) == (12, 7, 2)
    assert histogram_count(after) == (14, 14)
