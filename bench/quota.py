"""Benchmark 1 -- quota utilisation: how much of the API quota a backlog gets, without 429s.

A backlog of k whole quota-windows of ``GET /Geolocation/Trips`` is run by:
the bridge with N worker processes (threads pool, 4 threads each), paced (the
scheduler's default: one slot every (window + margin) / limit) and with
``BRIDGE_RATE_BURST`` = the limit (the whole quota at once after idle), plain
Celery with ``rate_limit`` set to the quota (``bench.plain_celery``; Celery's
limit is per worker process), and one sequential httpx client sleeping 1/Q
between calls. The sandbox enforces the quota over a sliding window and logs
every arrival; from that log: the steady-state rate (the calls before the
last period over their span: ``steady_rate``), against what the margin
leaves (window / (limit x interval)), the achieved rate (accepted calls /
(first-to-last accepted arrival + one window), as ``tests/system/test_execution.py``), 429s, the
most calls accepted and attempted in any window, and the drain time against
the ideal ((k-1) windows). Chart: calls in the trailing window over time.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import RedisServer, settings_from, stop_workers, wait_until
from optimum_bridge.keys import Keys
from optimum_bridge.quota.rate import RateLimit, default_margin_s
from optimum_bridge.sandbox.state import max_in_window

from .common import (
    CALLBACK_SECRET,
    SandboxProc,
    bridge_settings,
    finished_counts,
    start_redis,
    start_sandbox,
    start_workers,
    trips,
)
from .plain_celery import DONE_KEY, GET_TASK, make_app, plain_settings, send
from .quota_report import chart, show
from .report import (
    achieved_rate,
    chart_path,
    utc_stamp,
    workspace,
    write_result,
)

THREADS = 4


@dataclass(frozen=True)
class Case:
    """One configuration of the table; ``burst`` is the bridge's ``BRIDGE_RATE_BURST`` (1: paced)."""

    label: str
    kind: Literal["bridge", "plain", "sequential"]
    workers: int = 1
    threads: int = THREADS
    burst: int = 1


def bridge_cases(paced: tuple[int, ...], burst: tuple[int, ...], limit: int) -> list[Case]:
    """The bridge paced (the default) at each N of ``paced``, and with a burst of the whole quota at ``burst``."""
    cases = [Case(f"bridge N={n} paced", "bridge", n) for n in paced]
    return cases + [Case(f"bridge N={n} burst {limit}", "bridge", n, burst=limit) for n in burst]


#: Per quota: the cases of the table. At 30/m a paced case takes 3 min and a burst one 2, so the
#: bridge runs there at every N (20 min) but the baselines only at 10/s (the run says so).
PLANS: dict[str, list[Case]] = {
    "10/s": [
        *bridge_cases((1, 2, 4, 8), (1, 2, 4, 8), 10),
        *(Case(f"plain celery N={n}", "plain", n) for n in (1, 4)),
        Case("sequential httpx", "sequential", 1, 1),
    ],
    "30/m": bridge_cases((1, 2, 4, 8), (1, 2, 4, 8), 30),
}
LEFT_OUT = {"30/m": "plain celery, sequential httpx: time (both run at 10/s)"}
#: ``BENCH_QUOTA_ONLY=30/m`` (or ``10/s``) runs one quota's table of the full run.
ONLY = os.environ.get("BENCH_QUOTA_ONLY", "")


@dataclass
class Stack:
    redis: RedisServer
    sandbox: SandboxProc
    workdir: Path


def margin_s(quota: str) -> float:
    """The default margin for ``quota`` (``BRIDGE_RATE_LIMIT_MARGIN_S`` unset): 5 % of its window, at most 0.25 s."""
    return default_margin_s(RateLimit.parse(quota).window_s)


def interval_s(quota: str) -> float:
    """The scheduler's slot interval: (window + margin) / limit, rounded up to the ms (``quota.rate.Quota``)."""
    rate = RateLimit.parse(quota)
    return -(-round((rate.window_s + margin_s(quota)) * 1000) // rate.limit) / 1000


def _run_bridge(stack: Stack, case: Case, quota: str, backlog: int, timeout: float) -> float:
    extra: dict[str, str] = {}  # the default margin (proportionate to the window)
    if case.burst > 1:
        extra["BRIDGE_RATE_BURST"] = str(case.burst)
    values = bridge_settings(stack.redis.url, stack.sandbox, OPTIMUM_RATE_LIMIT=quota, **extra)
    workers = start_workers(values, count=case.workers, concurrency=case.threads, workdir=stack.workdir)
    try:
        client = BridgeClient(settings_from(values))
        keys = Keys(client.settings.key_prefix)
        started = time.monotonic()
        client.submit_many([trips(i) for i in range(backlog)])

        def finished() -> bool:
            counts = finished_counts(client.redis, keys)
            return sum(int(c or 0) for c in counts) >= backlog

        wait_until(finished, timeout=timeout, interval=0.1, what="the backlog")
        return time.monotonic() - started
    finally:
        stop_workers(workers)


def _run_plain(stack: Stack, case: Case, quota: str, backlog: int, timeout: float) -> float:
    sb = stack.sandbox
    values = plain_settings(stack.redis.url, sb.url, sb.token_url, rate_limit=quota, callback_secret=CALLBACK_SECRET)
    workers = start_workers(values, count=case.workers, concurrency=case.threads, workdir=stack.workdir, kind="plain")
    try:
        app = make_app(stack.redis.url, rate_limit=None)
        client = stack.redis.client()
        started = time.monotonic()
        for i in range(backlog):
            op = trips(i)
            send(app, GET_TASK, [op["path"], op["query"]])
        wait_until(lambda: int(client.get(DONE_KEY) or 0) >= backlog, timeout=timeout, interval=0.1, what="backlog")
        return time.monotonic() - started
    finally:
        stop_workers(workers)


def _run_sequential(stack: Stack, quota: str, backlog: int) -> float:
    rate = RateLimit.parse(quota)
    pause = rate.window_s / rate.limit
    with httpx.Client(timeout=30, trust_env=False) as http:
        form = {"client_id": "sandbox-client", "client_secret": "sandbox-secret", "grant_type": "client_credentials"}
        token = http.post(stack.sandbox.token_url, data=form).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        for i in range(backlog):
            op = trips(i)
            while True:
                answer = http.get(stack.sandbox.url + op["path"], params=op["query"], headers=headers)
                if answer.status_code != 429:
                    break
                time.sleep(float(answer.headers.get("retry-after", "1")))
            time.sleep(pause)
        return time.monotonic() - started


def steady_rate(accepted: list[float], burst: int) -> float:
    """Calls per second once the backlog runs: the calls before the last period over its span.

    Under a backlog the schedule is periodic: one call per interval (paced, ``burst`` 1) or
    ``burst`` calls at once every window + margin. The calls that precede the last period's
    first call, ``n - burst`` of them, took ``t[n - burst] - t[0]``, which is the long-run rate
    whatever the run's length and however spread each burst is.
    """
    if len(accepted) <= burst:
        return math.nan
    return (len(accepted) - burst) / (accepted[len(accepted) - burst] - accepted[0])


def summarize(case: Case, stats: dict[str, Any], quota: str, backlog: int, wall_s: float) -> dict[str, Any]:
    """The table row of one case, from the sandbox's log."""
    rate = RateLimit.parse(quota)
    log = stats["log"]
    accepted = sorted(e["t"] for e in log if e["accepted"])
    origin = min((e["t"] for e in log), default=0.0)
    achieved = achieved_rate(accepted, rate.window_s)
    windows = math.ceil(backlog / rate.limit)
    steady = steady_rate(accepted, case.burst)
    per_s = rate.limit / rate.window_s
    return {
        "label": case.label,
        "kind": case.kind,
        "workers": case.workers,
        "threads": case.threads,
        "burst": case.burst,
        "calls": len(log),
        "accepted": len(accepted),
        "rate_limited": stats["rate_limited"],
        "achieved_per_s": achieved,
        "achieved_of_quota": achieved / per_s,
        "steady_per_s": steady,
        "steady_of_quota": steady / per_s,
        "expected_steady_of_quota": rate.window_s / (rate.limit * interval_s(quota)),
        "max_accepted_in_window": stats["max_in_window"],
        "max_attempted_in_window": max_in_window([{**e, "accepted": True} for e in log], rate.window_s),
        "drain_s": accepted[-1] - accepted[0] if accepted else math.nan,
        "ideal_drain_s": (windows - 1) * rate.window_s,
        "token_requests": stats["token_requests"],
        "wall_s": wall_s,
        "arrivals": [[round(e["t"] - origin, 4), bool(e["accepted"])] for e in log],
    }


def run_table(stack: Stack, quota: str, backlog: int) -> list[dict[str, Any]]:
    """Every case at one quota; the sandbox is reset and Redis flushed between cases."""
    rate = RateLimit.parse(quota)
    stack.sandbox.configure(quota=quota)
    timeout = backlog / rate.limit * rate.window_s * 4 + 120
    rows = []
    for case in PLANS[quota]:
        stack.redis.flush()
        stack.sandbox.reset()
        print(f"  quota {quota}: {case.label} ({backlog} calls)...", flush=True)
        if case.kind == "bridge":
            wall = _run_bridge(stack, case, quota, backlog, timeout)
        elif case.kind == "plain":
            wall = _run_plain(stack, case, quota, backlog, timeout)
        else:
            wall = _run_sequential(stack, quota, backlog)
        rows.append(summarize(case, stack.sandbox.stats(), quota, backlog, wall))
    return rows


def run(*, quick: bool) -> Path:
    """Quick: 10/s only (6 windows = 60 calls). Full: also 30/m (3 windows = 90 calls, ~20 min)."""
    plan = [("10/s", 60)] if quick else [("10/s", 60), ("30/m", 90)]
    if ONLY:
        plan = [(quota, backlog) for quota, backlog in plan if quota == ONLY]
        if not plan:
            raise SystemExit(f"BENCH_QUOTA_ONLY: {ONLY!r} is not one of 10/s, 30/m (30/m needs the full run)")
    stamp = utc_stamp()
    tables = []
    with workspace("quota") as workdir, ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir, quota=plan[0][0])
        stop.callback(sandbox.stop)
        stack = Stack(redis_proc, sandbox, workdir)
        for quota, backlog in plan:
            rows = run_table(stack, quota, backlog)
            text = show(quota, backlog, rows, left_out=LEFT_OUT)
            tables.append({"quota": quota, "backlog": backlog, "rows": rows, "table": text})
    png = chart_path("quota", stamp)
    chart(tables, png)
    record = {
        "quick": quick,
        "threads_per_worker": THREADS,
        "margin_s": {"10/s": margin_s("10/s"), "30/m": margin_s("30/m")},
        "definition": "steady = (accepted - B) / (arrival of call n - B + 1 - first arrival), B = the burst "
        "(1 when paced); expected (bridge) = window / "
        "(limit x slot interval) = what the margin leaves; achieved = accepted / (last - first accepted "
        "arrival + window); of quota = rate / (N / window)",
        "left_out": LEFT_OUT if not quick else {},
        "tables": tables,
        "chart": png.name,
    }
    path = write_result("quota", record, stamp=stamp)
    print(f"\nwrote {path} and {png}")
    return path
