"""The ``accounts`` benchmark's phase of many accounts (issue 17): 1,000 accounts with backlogs on one pool.

N accounts (``BRIDGE_ACCOUNTS_FILE``), each its own client in the sandbox with
its own quota there (6/m: 1,000 of them are 100 calls/s, what this 2-core
machine can execute beside the bench), served by 2 worker processes x 4
threads; the sandbox answers at once (no API latency), so the bridge's own
cost is what is measured. Every account's token is fetched by a warm-up job
first. Operations are not checked against the OpenAPI document (``off``), so
that 1,000 documents are not fetched. Then:

1. **alone**: a few accounts (``Plan.alone``) with a backlog of ``Plan.jobs``
   each, nothing else running; each one's steady rate = (accepted calls - 1)
   / (last - first accepted arrival), from the sandbox's log.
2. **together**: every other account with the same backlog, submitted at one
   moment. Each account's steady rate / the alone accounts' mean is its
   **use**: goal >= 0.95 for every account. Meanwhile:
   - **urgent**: one ``urgent`` job on each of a few busy accounts, one a
     second: submission -> ``started_at``, against the same on the alone
     accounts (bounded by one slot interval, 10.04 s at 6/m, plus 100 ms);
   - **dispatch on idle accounts**: one job on each of ``Plan.probes``
     accounts that have nothing queued (their last call a slot interval or more
     ago), one every 0.3 s: submission -> ``started_at``, against the same
     before the backlogs (goal p50 <= 10 ms).
"""

from __future__ import annotations

import statistics
import textwrap
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import settings_from, stop_workers
from optimum_bridge.keys import Keys
from optimum_bridge.quota.rate import Quota, RateLimit

from .common import SandboxProc, bridge_settings, finished_counts, start_redis, start_sandbox, start_workers
from .report import percentile, print_table

QUOTA = "6/m"
SECRET_ENV = "MANY_SECRET"
SECRET = "many-accounts-s3cret"
PREFIX = "many:"


@dataclass(frozen=True)
class Plan:
    accounts: int  # in all: alone + busy + idle probes
    jobs: int  # backlog per account
    alone: int  # accounts measured alone first
    urgent: int  # urgent jobs on busy accounts (and as many on the alone ones)
    probes: int  # idle accounts probed before the backlogs, and as many during them


FULL = Plan(accounts=1000, jobs=7, alone=5, urgent=10, probes=30)
QUICK = Plan(accounts=200, jobs=5, alone=5, urgent=5, probes=15)


def name(index: int) -> str:
    return f"acct{index:05d}"


def client_id(account: str) -> str:
    return f"{account}-client"


def accounts_file(directory: Path, sandbox: SandboxProc, count: int) -> Path:
    """``[accounts.acctNNNNN]`` for ``count`` accounts at ``QUOTA``, all on the one sandbox."""
    tables = [
        textwrap.dedent(
            f"""
            [accounts.{name(i)}]
            client_id = "{client_id(name(i))}"
            client_secret_env = "{SECRET_ENV}"
            environment = "sandbox"
            api_url = "{sandbox.url}"
            token_url = "{sandbox.token_url}"
            rate_limit = "{QUOTA}"
            """
        )
        for i in range(count)
    ]
    path = directory / "many-accounts.toml"
    path.write_text("".join(tables))
    return path


def configure(sandbox: SandboxProc, count: int) -> None:
    """Every account a client of the sandbox, each with its own ``QUOTA``, no latency."""
    ids = [client_id(name(i)) for i in range(count)]
    sandbox.reset()
    sandbox.configure(clients=dict.fromkeys(ids, SECRET), client_quotas=dict.fromkeys(ids, QUOTA), latency_ms=0)


def op(account: str, *, priority: str = "normal") -> dict[str, Any]:
    return {"method": "GET", "path": "/Vehicles", "account": account, "coalesce": False, "priority": priority}


def finished(client: BridgeClient) -> int:
    """Jobs finished so far (the stats hash's counters, written by ``lua/complete.lua``)."""
    raw = finished_counts(client.redis, Keys(PREFIX))
    return sum(int(v or 0) for v in raw)


def wait_finished(client: BridgeClient, count: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while finished(client) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{finished(client)} of {count} jobs finished after {timeout:.0f} s")
        time.sleep(0.5)


def started_ms(client: BridgeClient, submitted: list[tuple[str, float]]) -> list[float]:
    """Submission (wall clock) -> ``started_at`` of each job, in ms."""
    out = []
    for job_id, at in submitted:
        status = client.wait(job_id, timeout=120)
        if status.started_at is None:
            raise RuntimeError(f"job {job_id} finished without started_at")
        out.append((status.started_at.timestamp() - at) * 1000)
    return out


def one_by_one(client: BridgeClient, jobs: list[dict[str, Any]], spacing_s: float) -> list[tuple[str, float]]:
    """Submit ``jobs`` one at a time, ``spacing_s`` apart (the load pattern, not a wait for an event)."""
    submitted = []
    for job in jobs:
        at = time.time()
        submitted.append((client.submit(job), at))
        time.sleep(spacing_s)
    return submitted


def steady(log: list[dict[str, Any]], since: float) -> dict[str, list[float]]:
    """Each client's accepted arrivals since ``since`` (sandbox clock), in order."""
    calls: dict[str, list[float]] = {}
    for entry in log:
        if entry["t"] >= since and entry["accepted"]:
            calls.setdefault(entry["client_id"], []).append(entry["t"])
    return {cid: sorted(ts) for cid, ts in calls.items()}


def rate(arrivals: list[float]) -> float:
    """Calls per second between the first and last arrival (NaN under two calls)."""
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else float("nan")


def latency(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99), "max_ms": max(values)}


def phase(client: BridgeClient, sandbox: SandboxProc, plan: Plan) -> dict[str, Any]:
    """Run the phase on a bridge whose workers serve ``plan.accounts`` accounts; its figures."""
    names = [name(i) for i in range(plan.accounts)]
    alone, idle = names[: plan.alone], names[plan.accounts - 2 * plan.probes :]
    busy = names[plan.alone : plan.accounts - 2 * plan.probes]
    interval_s = Quota.of(RateLimit.parse(QUOTA)).interval_s
    print(f"  many accounts: warm-up, one job per account ({plan.accounts} tokens)...", flush=True)
    client.submit_many([op(n) for n in names])
    wait_finished(client, plan.accounts, timeout=plan.accounts / 5 + 60)
    done = plan.accounts
    time.sleep(interval_s + 0.5)  # every account's next slot free: the probes meet idle accounts

    print(f"  idle probes, machine idle: {plan.probes} accounts...", flush=True)
    quiet = started_ms(client, one_by_one(client, [op(n) for n in idle[: plan.probes]], 0.3))
    done += plan.probes

    print(f"  alone: {plan.alone} accounts x {plan.jobs} jobs, then {plan.urgent} urgent...", flush=True)
    since = time.monotonic()  # the sandbox log's clock too (one for every process)
    client.submit_many([op(n) for n in alone for _ in range(plan.jobs)])
    time.sleep(interval_s / 2)
    urgent_alone = one_by_one(client, [op(alone[i % plan.alone], priority="urgent") for i in range(plan.urgent)], 1.0)
    done += plan.alone * plan.jobs + plan.urgent
    wait_finished(client, done, timeout=plan.jobs * interval_s * 2 + 60)
    alone_calls = steady(sandbox.stats()["log"], since)
    alone_rates = [rate(alone_calls.get(client_id(n), [])) for n in alone]

    print(f"  together: {len(busy)} accounts x {plan.jobs} jobs; urgent and idle probes meanwhile...", flush=True)
    since = time.monotonic()  # the sandbox log's clock too (one for every process)
    started = time.monotonic()
    client.submit_many([op(n) for n in busy for _ in range(plan.jobs)])
    submitted_s = time.monotonic() - started
    time.sleep(interval_s / 2)
    urgent_busy = one_by_one(client, [op(busy[i * 7], priority="urgent") for i in range(plan.urgent)], 1.0)
    loaded = one_by_one(client, [op(n) for n in idle[plan.probes :]], 0.3)
    done += len(busy) * plan.jobs + plan.urgent + plan.probes
    wait_finished(client, done, timeout=plan.jobs * interval_s * 3 + 120)
    log = sandbox.stats()["log"]
    together = steady(log, since)
    alone_mean = statistics.fmean(alone_rates)
    uses = sorted(rate(together.get(client_id(n), [])) / alone_mean for n in busy)
    rejected = sum(1 for e in log if e["t"] >= since and e["status"] == 429)
    return {
        "plan": plan.__dict__,
        "quota": QUOTA,
        "slot_interval_s": interval_s,
        "submit_s": submitted_s,
        "alone_rates_per_s": alone_rates,
        "use": {
            "accounts": len(uses),
            "min": uses[0],
            "p1": percentile(uses, 1),
            "p5": percentile(uses, 5),
            "median": percentile(uses, 50),
            "below_0_95": sum(1 for u in uses if u < 0.95),
        },
        "rate_limited_together": rejected,
        "calls_per_s_together": sum(len(v) for v in together.values()) / max(1e-9, max_t(together) - since),
        "urgent_alone": latency(started_ms(client, urgent_alone)),
        "urgent_busy": latency(started_ms(client, urgent_busy)),
        "idle_dispatch_quiet": latency(quiet),
        "idle_dispatch_loaded": latency(started_ms(client, loaded)),
    }


def max_t(calls: dict[str, list[float]]) -> float:
    return max((ts[-1] for ts in calls.values() if ts), default=0.0)


def run_phase(plan: Plan, workdir: Path) -> dict[str, Any]:
    """Its own Redis, sandbox and workers (2 x 4 threads) for ``plan``; the figures and their tables."""
    with ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir, quota=None)
        stop.callback(sandbox.stop)
        configure(sandbox, plan.accounts)
        values = bridge_settings(
            redis_proc.url,
            sandbox,
            BRIDGE_KEY_PREFIX=PREFIX,
            BRIDGE_ACCOUNTS_FILE=str(accounts_file(workdir, sandbox, plan.accounts)),
            BRIDGE_VALIDATE_OPERATIONS="off",
            **{SECRET_ENV: SECRET},
        )
        workers = start_workers(values, count=2, concurrency=4, workdir=workdir)
        stop.callback(stop_workers, workers)
        client = BridgeClient(settings_from(values))
        stop.callback(client.close)
        result = phase(client, sandbox, plan)
    first, second = rows(result)
    title = f"Many accounts: {plan.accounts} at {QUOTA}, {plan.jobs} jobs each, 2 x 4 threads, API answers at once"
    headers = ["accounts together", "alone calls/min", "use min", "use p1", "use median", "use < 0.95", "429"]
    tables = [print_table(title, [*headers, "calls/s"], first, digits=3)]
    latency_title = f"Start latency (submission -> started_at); slot interval {result['slot_interval_s']:.3f} s"
    tables.append(print_table(latency_title, ["job", "p50 ms", "p99 ms", "max ms"], second))
    return {**result, "tables": tables}


def rows(result: dict[str, Any]) -> tuple[list[list[Any]], list[list[Any]]]:
    use = result["use"]
    first = [
        [
            use["accounts"],
            statistics.fmean(result["alone_rates_per_s"]) * 60,
            use["min"],
            use["p1"],
            use["median"],
            use["below_0_95"],
            result["rate_limited_together"],
            result["calls_per_s_together"],
        ]
    ]
    second = [
        [what, *(result[key][k] for k in ("p50_ms", "p99_ms", "max_ms"))]
        for what, key in (
            ("urgent, account alone", "urgent_alone"),
            ("urgent, busy account among all", "urgent_busy"),
            ("idle account, machine idle", "idle_dispatch_quiet"),
            ("idle account, during the backlogs", "idle_dispatch_loaded"),
        )
    ]
    return first, second
