"""Benchmark 4 -- token: one token request per token lifetime, whatever the concurrency.

Cold start: 2 worker processes x 16 threads, no token in Redis, 64 operations
submitted at once (32 threads race for the token; the sandbox answers each
call after 30 ms), repeated with fresh workers and an empty Redis; the
sandbox's ``token_requests`` must be 1 every time. Short lifetime: the sandbox
issues tokens valid ``token_lifetime_s`` (20 s; 10 s quick) and the bridge
runs a steady 10 operations per second for 60 s (30 s quick); the store drops
its copy a tenth of the lifetime early, so requests should be about
run length / (0.9 x lifetime), with no 401. The largest gap between API calls
shows what a refresh costs the operations waiting for it.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import RedisServer, settings_from, stop_workers, wait_until
from optimum_bridge.keys import Keys
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import SandboxProc, bridge_settings, finished_counts, start_redis, start_sandbox, start_workers
from .report import (
    median,
    print_table,
    utc_stamp,
    workspace,
    write_result,
)

PLATES = generate_fleet(42, 60).plates()
PROCS, THREADS = 2, 16


def _op(i: int) -> dict[str, Any]:
    return {"method": "GET", "path": f"/Vehicles/{PLATES[i % len(PLATES)]}", "coalesce": False}


def _finished(client: BridgeClient) -> int:
    counts = finished_counts(client.redis, Keys(client.settings.key_prefix))
    return sum(int(c or 0) for c in counts)


def cold_start(redis_proc: RedisServer, sandbox: SandboxProc, workdir: Path, *, burst: int) -> dict[str, Any]:
    """Fresh Redis, fresh workers, ``burst`` operations at once: how many token requests?"""
    redis_proc.flush()
    sandbox.reset()
    values = bridge_settings(redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT="100000/s")
    workers = start_workers(values, count=PROCS, concurrency=THREADS, workdir=workdir)
    try:
        client = BridgeClient(settings_from(values))
        started = time.monotonic()
        client.submit_many([_op(i) for i in range(burst)])
        wait_until(lambda: _finished(client) >= burst, timeout=60, what="the burst")
        elapsed = time.monotonic() - started
    finally:
        stop_workers(workers)
    stats = sandbox.stats()
    return {
        "token_requests": stats["token_requests"],
        "unauthorized": stats["unauthorized"],
        "calls": stats["calls"],
        "burst_s": elapsed,
    }


def short_lifetime(
    redis_proc: RedisServer, sandbox: SandboxProc, workdir: Path, *, lifetime_s: int, run_s: float
) -> dict[str, Any]:
    """A steady 10 ops/s for ``run_s`` with tokens living ``lifetime_s``: requests and refresh times."""
    redis_proc.flush()
    sandbox.reset()
    sandbox.configure(token_lifetime_s=lifetime_s)
    values = bridge_settings(redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT="100000/s")
    workers = start_workers(values, count=PROCS, concurrency=THREADS, workdir=workdir)
    refreshes: list[float] = []
    try:
        client = BridgeClient(settings_from(values))
        seen, submitted, start = 0, 0, time.monotonic()
        while time.monotonic() - start < run_s:
            client.submit(_op(submitted))
            submitted += 1
            if submitted % 5 == 0:  # every 0.5 s: note when the token count moved
                count = sandbox.stats()["token_requests"]
                refreshes += [time.monotonic() - start] * (count - seen)
                seen = count
            time.sleep(max(0.0, start + submitted * 0.1 - time.monotonic()))
        wait_until(lambda: _finished(client) >= submitted, timeout=60, what="the last operations")
    finally:
        stop_workers(workers)
        sandbox.configure(token_lifetime_s=30_734_400)
    stats = sandbox.stats()
    arrivals = sorted(e["t"] for e in stats["log"])
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    span = arrivals[-1] - arrivals[0]
    usable = lifetime_s - min(300.0, lifetime_s / 10)
    return {
        "lifetime_s": lifetime_s,
        "run_s": span,
        "operations": submitted,
        "token_requests": stats["token_requests"],
        "expected": math.ceil(span / usable),
        "run_over_lifetime": span / lifetime_s,
        "unauthorized": stats["unauthorized"],
        "refreshes_seen_at_s": [round(t, 1) for t in refreshes],
        "median_gap_ms": median(gaps) * 1000,
        "max_gap_ms": max(gaps) * 1000,
    }


def run(*, quick: bool) -> Path:
    """Quick: 1 cold start, lifetime 10 s over 30 s. Full: 3 cold starts, lifetime 20 s over 60 s."""
    trials, lifetime, run_s = (1, 10, 30.0) if quick else (3, 20, 60.0)
    stamp = utc_stamp()
    with workspace("token") as workdir, ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir, quota=None, latency_ms=30)
        stop.callback(sandbox.stop)
        cold = []
        for trial in range(trials):
            print(f"  cold start {trial + 1}/{trials}: {PROCS} procs x {THREADS} threads, 64 ops at once", flush=True)
            cold.append(cold_start(redis_proc, sandbox, workdir, burst=64))
        print(f"  short lifetime: tokens live {lifetime}s, 10 ops/s for {run_s:.0f}s", flush=True)
        short = short_lifetime(redis_proc, sandbox, workdir, lifetime_s=lifetime, run_s=run_s)
    rows = [[f"cold start {i + 1}", 64, c["token_requests"], 1, c["unauthorized"], ""] for i, c in enumerate(cold)]
    rows.append(
        [
            f"lifetime {lifetime}s, {short['run_s']:.0f}s run",
            short["operations"],
            short["token_requests"],
            short["expected"],
            short["unauthorized"],
            f"{short['median_gap_ms']:.0f} / {short['max_gap_ms']:.0f}",
        ]
    )
    headers = ["scenario", "ops", "token requests", "expected", "401s", "API gap ms median / max"]
    text = print_table(f"Token requests -- {PROCS} worker procs x {THREADS} threads, API latency 30 ms", headers, rows)
    print(f"refreshes seen at (s): {short['refreshes_seen_at_s']}")
    record = {
        "quick": quick,
        "workers": f"{PROCS} x {THREADS} threads",
        "cold_starts": cold,
        "short_lifetime": short,
        "expected_rule": "ceil(run / (lifetime - min(300, lifetime / 10)))",
        "table": text,
    }
    path = write_result("token", record, stamp=stamp)
    print(f"\nwrote {path}")
    return path
