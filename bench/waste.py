"""Benchmark -- no call wasted (spec §13): each section measures one kind of waste, against a baseline of the same run.

**Convergence of the learned quota** (``convergence``): the API allows fewer
calls than the bridge is configured for (the sandbox at 4/s against
``OPTIMUM_RATE_LIMIT=10/s``; full run: also 20/m against 30/m). A backlog runs
with the sandbox stating its quota in no header, ``X-RateLimit-*`` or the
IETF ``RateLimit-Policy`` / ``RateLimit``, each with learning on (the default)
and off (``BRIDGE_LEARN_QUOTA=false``: the fixed configured limit, the
baseline). From the sandbox's arrival log: the 429s, when the first episode of
429s ended (429s more than one window apart are separate episodes; later
ones are the learner probing back up), the accepted rate against the API's
quota, the drain time, and the limit each case ended on.

Each section is a function ``(stack, quick) -> {"title", "table", "rows", ...}``
listed in ``SECTIONS``; ``run`` runs them all on one Redis and one sandbox and
writes one ``bench/results/waste-<stamp>.json``.

**Calls a realistic batch wastes** (``wasted_calls``, in ``bench/wasted_calls.py``):
the demo's batch with 10 % duplicated reads and 5 % malformed operations, with
spec §13's checks and shared reads on, and off (the baseline): calls spent,
429s, refusals, time to drain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import RedisServer, settings_from, stop_workers, wait_until
from optimum_bridge.keys import Keys
from optimum_bridge.quota.limiter import RateLimiter
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import SandboxProc, bridge_settings, finished_counts, start_redis, start_sandbox, start_workers
from .report import print_table, utc_stamp, workspace, write_result
from .wasted_calls import wasted_calls

THREADS = 4
PLATES = generate_fleet(42, 60).plates()


@dataclass
class Stack:
    """What every section shares: one private Redis, one sandbox process, a scratch directory."""

    redis: RedisServer
    sandbox: SandboxProc
    workdir: Path


@dataclass(frozen=True)
class Plan:
    """One convergence table: the API's real quota, the bridge's configured one, the backlog."""

    api: str
    configured: str
    backlog: int
    styles: tuple[str, ...] = ("none", "x", "ietf")


def margin_s(quota: str) -> float:
    return 0.15 if quota.endswith("/s") else 0.25  # as bench.quota


def episodes(times: list[float], gap_s: float) -> list[list[float]]:
    """429 arrival times grouped into episodes: a 429 more than ``gap_s`` after the previous one opens a new one."""
    groups: list[list[float]] = []
    for t in sorted(times):
        if groups and t - groups[-1][-1] <= gap_s:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups


def _drain(stack: Stack, plan: Plan, *, style: str, learn: bool) -> tuple[dict[str, Any], str]:
    """Run the backlog once; returns the sandbox's stats and the limit the bridge ended on."""
    stack.redis.flush()
    stack.sandbox.reset()
    stack.sandbox.configure(quota=plan.api, rate_limit_headers=style)
    values = bridge_settings(
        stack.redis.url,
        stack.sandbox,
        OPTIMUM_RATE_LIMIT=plan.configured,
        BRIDGE_RATE_LIMIT_MARGIN_S=str(margin_s(plan.configured)),
        BRIDGE_LEARN_QUOTA=str(learn).lower(),
        BRIDGE_MAX_ATTEMPTS="50",
        BRIDGE_RETRY_BASE_S="0.5",
    )
    workers = start_workers(values, count=1, concurrency=THREADS, workdir=stack.workdir)
    try:
        client = BridgeClient(settings_from(values))
        keys = Keys(client.settings.key_prefix)
        client.submit_many(
            [{"method": "GET", "path": f"/Vehicles/{PLATES[i % len(PLATES)]}"} for i in range(plan.backlog)]
        )
        rate = RateLimit.parse(plan.api)
        timeout = plan.backlog / rate.limit * rate.window_s * 6 + 120

        def finished() -> bool:
            counts = finished_counts(client.redis, keys)
            return sum(int(c or 0) for c in counts) >= plan.backlog

        wait_until(finished, timeout=timeout, interval=0.2, what="the backlog")
        limiter = RateLimiter(
            client.redis,
            Keys(client.settings.key_prefix),
            RateLimit.parse(plan.configured),
            margin_s=margin_s(plan.configured),
        )
        return stack.sandbox.stats(), limiter.state().learned_text
    finally:
        stop_workers(workers)


def _row(plan: Plan, style: str, learn: bool, stats: dict[str, Any], ended_on: str) -> dict[str, Any]:
    api = RateLimit.parse(plan.api)
    window = RateLimit.parse(plan.configured).window_s + margin_s(plan.configured)
    log = sorted((e for e in stats["log"] if e["path"].startswith("/Vehicles")), key=lambda e: e["t"])
    start = log[0]["t"] if log else 0.0
    accepted = [e["t"] - start for e in log if e["accepted"]]
    refused = [e["t"] - start for e in log if e["status"] == 429]
    groups = episodes(refused, window)
    drain = accepted[-1] - accepted[0] if len(accepted) > 1 else math.nan
    return {
        "headers": style,
        "learn": learn,
        "calls": len(log),
        "accepted": len(accepted),
        "rate_limited": len(refused),
        "first_episode_429s": len(groups[0]) if groups else 0,
        "converged_s": groups[0][-1] if groups else 0.0,
        "later_429s": sum(len(g) for g in groups[1:]),
        "episodes": len(groups),
        "accepted_per_s": (len(accepted) - 1) / drain if drain else math.nan,
        "api_per_s": api.limit / api.window_s,
        "drain_s": drain,
        "ended_on": ended_on,
        "refused_at_s": [round(t, 3) for t in refused],
    }


def convergence(stack: Stack, *, quick: bool) -> dict[str, Any]:
    """The learned quota's convergence: 429s and seconds to converge, with and without headers, learning on and off."""
    plans = [Plan("4/s", "10/s", 60)]
    if not quick:
        plans.append(Plan("20/m", "30/m", 60, styles=("none", "x")))
    tables = []
    for plan in plans:
        rows = []
        for style in plan.styles:
            for learn in (True, False):
                print(
                    f"  API {plan.api}, configured {plan.configured}: headers {style}, learning {learn}...", flush=True
                )
                started = time.monotonic()
                stats, ended_on = _drain(stack, plan, style=style, learn=learn)
                row = _row(plan, style, learn, stats, ended_on)
                row["wall_s"] = time.monotonic() - started
                rows.append(row)
        tables.append({"api": plan.api, "configured": plan.configured, "backlog": plan.backlog, "rows": rows})
    text = "\n\n".join(_show(table) for table in tables)
    return {"title": "convergence of the learned quota", "tables": tables, "table": text}


def _show(table: dict[str, Any]) -> str:
    headers = ["headers", "learning", "calls", "429", "1st episode", "converged s", "later 429", "ok/s", "API /s"]
    headers += ["drain s", "ended on"]
    cells = [
        [
            r["headers"],
            "on" if r["learn"] else "off (baseline)",
            r["calls"],
            r["rate_limited"],
            r["first_episode_429s"],
            round(r["converged_s"], 1) if r["rate_limited"] else "-",
            r["later_429s"],
            round(r["accepted_per_s"], 2),
            r["api_per_s"],
            round(r["drain_s"], 1),
            r["ended_on"],
        ]
        for r in table["rows"]
    ]
    title = (
        f"Convergence -- API quota {table['api']}, configured {table['configured']}, "
        f"backlog {table['backlog']} GETs, 1 worker x {THREADS} threads"
    )
    return print_table(title, headers, cells)


#: Every section of the benchmark, in order; each returns its figures and its printed table.
SECTIONS: list[Callable[..., dict[str, Any]]] = [wasted_calls, convergence]


def run(*, quick: bool) -> Path:
    """Quick: 4/s against 10/s (six runs of 60 calls, ~3 min). Full: also 20/m against 30/m (~20 min more)."""
    stamp = utc_stamp()
    sections: dict[str, Any] = {}
    with workspace("waste") as workdir, ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir)
        stop.callback(sandbox.stop)
        stack = Stack(redis_proc, sandbox, workdir)
        for section in SECTIONS:
            sections[section.__name__] = section(stack, quick=quick)
    record = {
        "quick": quick,
        "threads_per_worker": THREADS,
        "definition": "429s are grouped in episodes (a 429 more than one configured window + margin after the "
        "previous opens a new one); converged = the last 429 of the first episode, in seconds since the first "
        "call; later = 429s of later episodes (the learner probing back up, or the baseline's repeated 429s); "
        "ok/s = (accepted - 1) / (last - first accepted arrival)",
        "sections": sections,
    }
    path = write_result("waste", record, stamp=stamp)
    print(f"\nwrote {path}")
    return path
