"""The ingress's open endpoints about the bridge itself: ``/healthz``, ``/readyz``, ``/metrics``.

Readiness and the Prometheus metrics are read from Redis at request time --
the counters every process writes through ``process.metrics.Metrics``, the queue
lists, the due set, the dead letters and the worker heartbeats -- so any
number of ingress replicas report the same numbers and none keeps state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from optimum_bridge.keys import CALLBACKS_QUEUE, OPERATIONS_QUEUE, PRIORITIES, Keys, text
from optimum_bridge.process.metrics import LATENCY_BUCKETS, fold_then_read, hashes_read, with_totals
from optimum_bridge.quota.limiter import LimiterState

#: The exposition format ``generate_latest`` writes (classic text, understood by every Prometheus).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: A worker whose last heartbeat is older than this (Redis clock) does not count as alive.
HEARTBEAT_WINDOW_S = 30
QUEUES: tuple[str, ...] = (OPERATIONS_QUEUE, CALLBACKS_QUEUE)
JOB_STATES: tuple[str, ...] = ("succeeded", "failed")
CALLBACK_OUTCOMES: tuple[str, ...] = ("delivered", "failed", "dead")


@dataclass(frozen=True)
class Snapshot:
    """Everything ``/metrics`` shows, read in one Redis round trip."""

    queues: dict[str, int]
    retries_scheduled: int
    dead_letters: int
    counters: dict[str, float]  # with the totals the write path leaves to readers (``with_totals``)
    waiting: dict[tuple[str, str], int] = field(default_factory=dict)  # (account, priority) -> jobs waiting

    def counter(self, name: str) -> float:
        """A counter of the stats hash (0 when never incremented)."""
        return self.counters.get(name, 0.0)


def read_snapshot(client: redis.Redis, keys: Keys, accounts: Sequence[str] = ("default",)) -> Snapshot:
    """Queue lengths, the lanes and delayed sets of every account, dead letters and every counter, pipelined."""
    lanes = [(account, priority) for account in accounts for priority in PRIORITIES]
    with client.pipeline(transaction=False) as pipe:
        for name in QUEUES:
            pipe.llen(keys.queue(name))
        for account, priority in lanes:
            pipe.zcard(keys.lane(priority, account))
        for account in accounts:
            pipe.zcard(keys.delayed(account))
        pipe.zcard(keys.due)
        pipe.hlen(keys.dead_letters)
        fold_then_read(pipe, keys, [keys.stats])  # the counts scripts left pending, in the hash first
        *sizes, due, dead, folded = pipe.execute()
    (stats,) = hashes_read(folded)
    lengths = sizes[: len(QUEUES)]
    waiting = sizes[len(QUEUES) : len(QUEUES) + len(lanes)]
    delayed = sizes[len(QUEUES) + len(lanes) :]
    return Snapshot(
        queues={name: int(length) for name, length in zip(QUEUES, lengths, strict=True)},
        retries_scheduled=int(due) + sum(int(n) for n in delayed),
        dead_letters=int(dead),
        counters=with_totals({text(k): float(v) for k, v in stats.items()}),
        waiting={lane: int(size) for lane, size in zip(lanes, waiting, strict=True)},
    )


def _labelled_counter(name: str, doc: str, label: str, values: Iterable[tuple[str, float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, amount in values:
        family.add_metric([value], amount)
    return family


def _gauges(snap: Snapshot) -> Iterator[Metric]:
    depth = GaugeMetricFamily("optimum_bridge_queue_depth", "Messages waiting in a queue.", labels=["queue"])
    for name, length in snap.queues.items():
        depth.add_metric([name], length)
    yield depth
    waiting = GaugeMetricFamily(
        "optimum_bridge_waiting_jobs", "Jobs waiting in their lane for a quota slot.", labels=["account", "priority"]
    )
    for (account, priority), size in snap.waiting.items():
        waiting.add_metric([account, priority], size)
    yield waiting
    yield GaugeMetricFamily(
        "optimum_bridge_retries_scheduled",
        "Retries and deferred messages waiting for their time.",
        snap.retries_scheduled,
    )
    yield GaugeMetricFamily(
        "optimum_bridge_dead_letters", "Undeliverable callbacks awaiting replay.", snap.dead_letters
    )


def _counters(snap: Snapshot) -> Iterator[Metric]:
    jobs = [(state, snap.counter(f"jobs:{state}")) for state in JOB_STATES]
    yield _labelled_counter("optimum_bridge_jobs", "Jobs finished, by final state.", "state", jobs)
    calls = sorted((k.removeprefix("calls:"), v) for k, v in snap.counters.items() if k.startswith("calls:"))
    yield _labelled_counter("optimum_bridge_api_calls", "Calls to the Optimum API, by HTTP status.", "status", calls)
    yield CounterMetricFamily(
        "optimum_bridge_rate_limited", "429 answers from the Optimum API.", snap.counter("rate_limited")
    )
    yield CounterMetricFamily(
        "optimum_bridge_token_requests", "Requests to the identity server.", snap.counter("token_requests")
    )
    yield from _account_counters(snap)
    callbacks = [(outcome, snap.counter(f"callbacks:{outcome}")) for outcome in CALLBACK_OUTCOMES]
    yield _labelled_counter("optimum_bridge_callbacks", "Callback deliveries, by outcome.", "outcome", callbacks)


def _account_counters(snap: Snapshot) -> Iterator[Metric]:
    """The per-account counters (``acct:<account>:...``): calls by status, 429s, token requests, calls saved."""
    calls = CounterMetricFamily(
        "optimum_bridge_account_api_calls",
        "Calls to the Optimum API, by account and HTTP status.",
        labels=["account", "status"],
    )
    limited = CounterMetricFamily("optimum_bridge_account_rate_limited", "429 answers, by account.", labels=["account"])
    tokens = CounterMetricFamily(
        "optimum_bridge_account_token_requests", "Requests to the identity server, by account.", labels=["account"]
    )
    saved = CounterMetricFamily(
        "optimum_bridge_account_calls_saved",
        "Jobs served without a call of their own (spec 13), by account and how: "
        "shared (joined an identical GET's call) or cached (a fresh answer, max_age_s).",
        labels=["account", "how"],
    )
    for name, value in sorted(snap.counters.items()):
        if not name.startswith("acct:"):
            continue
        account, _, counter = name.removeprefix("acct:").partition(":")
        if counter.startswith("calls:"):
            calls.add_metric([account, counter.removeprefix("calls:")], value)
        elif counter == "rate_limited":
            limited.add_metric([account], value)
        elif counter == "token_requests":
            tokens.add_metric([account], value)
        elif counter in ("reads_shared", "reads_cached"):
            saved.add_metric([account, counter.removeprefix("reads_")], value)
    yield from (calls, limited, tokens, saved)


def _latency(snap: Snapshot) -> HistogramMetricFamily:
    buckets: list[tuple[str, float]] = []
    running = 0.0
    for bound in LATENCY_BUCKETS:  # stored per bucket, exposed cumulatively
        running += snap.counter(f"latency_bucket:{bound}")
        buckets.append((str(float(bound)), running))
    buckets.append(("+Inf", max(running, snap.counter("latency_count"))))
    return HistogramMetricFamily(
        "optimum_bridge_api_call_duration_seconds",
        "Duration of calls to the Optimum API.",
        buckets=buckets,
        sum_value=snap.counter("latency_sum"),
    )


def _limits(limits: Mapping[str, LimiterState]) -> Iterator[Metric]:
    """Each account's configured limit and the one in force (lower when learned, spec §13), per window."""
    configured = GaugeMetricFamily(
        "optimum_bridge_account_rate_limit_configured",
        "Calls per window the account is configured for.",
        labels=["account"],
    )
    in_force = GaugeMetricFamily(
        "optimum_bridge_account_rate_limit",
        "Calls per window the limiter allows now: min(configured, learned from headers and 429s).",
        labels=["account"],
    )
    for account, state in limits.items():
        configured.add_metric([account], state.configured)
        in_force.add_metric([account], state.limit)
    yield from (configured, in_force)


class BridgeCollector(Collector):
    """Reads a fresh ``Snapshot`` at every scrape and turns it into metric families."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        accounts: Sequence[str] = ("default",),
        limits: Mapping[str, LimiterState] | None = None,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._accounts = accounts
        self._limits = limits or {}

    def collect(self) -> Iterator[Metric]:
        """Every metric of the bridge (raises ``redis.RedisError`` when Redis is down)."""
        snap = read_snapshot(self._redis, self._keys, self._accounts)
        yield from _gauges(snap)
        yield from _limits(self._limits)
        yield from _counters(snap)
        yield _latency(snap)


def render_metrics(
    client: redis.Redis,
    keys: Keys,
    accounts: Sequence[str] = ("default",),
    limits: Mapping[str, LimiterState] | None = None,
) -> bytes:
    """The Prometheus text exposition of the bridge's metrics, read now (``limits``: each account's limiter state)."""
    return generate_latest(BridgeCollector(client, keys, accounts, limits))


@dataclass(frozen=True)
class Readiness:
    """Whether the bridge can do work: Redis answers and a worker is alive."""

    ready: bool
    detail: str
    workers: int = 0


def readiness(client: redis.Redis, keys: Keys, *, window_s: int = HEARTBEAT_WINDOW_S) -> Readiness:
    """Ready when Redis answers PING and a worker heartbeat is at most ``window_s`` old (Redis clock)."""
    try:
        client.ping()
        now = int(client.time()[0])
        alive = int(client.zcount(keys.workers, now - window_s, "+inf"))
    except redis.RedisError as exc:
        return Readiness(False, f"redis: no answer ({type(exc).__name__})")
    if alive == 0:
        return Readiness(False, f"workers: no worker heartbeat in the last {window_s} s")
    return Readiness(True, "ok", alive)


ops = APIRouter(tags=["health"])


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@ops.get("/readyz", responses={503: {"description": "Redis or a live worker is missing (problem+json)"}})
def readyz(request: Request) -> dict[str, Any]:
    """Redis answers and at least one worker sent a heartbeat in the last 30 s."""
    state = readiness(request.app.state.bridge.redis, request.app.state.keys)
    if not state.ready:
        raise HTTPException(503, state.detail)
    return {"status": "ready", "workers": state.workers}


@ops.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics, read from Redis at every scrape."""
    bridge = request.app.state.bridge
    names = bridge.settings.accounts.names
    limits = {name: bridge.quota_state(name) for name in names}
    body = render_metrics(bridge.redis, request.app.state.keys, names, limits)
    return Response(body, media_type=CONTENT_TYPE)
