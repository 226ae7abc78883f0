"""The ``accounts`` benchmark's phases 1 and 2 (``bench.accounts``): three accounts on one pool.

Accounts A, B and C (``QUOTAS``) with unequal quotas and a 100 ms API:
**quota use**, each account's backlog alone then the three together, and
**start latency**, B's jobs one at a time with A idle then draining a deep
backlog. ``bench.accounts``'s docstring defines every figure.
"""

from __future__ import annotations

import math
import random
import textwrap
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import settings_from, stop_workers, wait_until
from optimum_bridge.quota.rate import Quota, RateLimit
from optimum_bridge.sandbox.state import max_in_window

from .common import SandboxProc, bridge_settings, start_redis, start_sandbox, start_workers, trips
from .report import achieved_rate, percentile, print_table

#: account name -> quota; the sandbox client of ``NAME`` is ``NAME-client``, its secret in ``NAME_SECRET``.
QUOTAS = {"alpha": "10/s", "bravo": "5/s", "charlie": "2/s"}
WORKERS, THREADS = 2, 4
API_LATENCY_MS = 100.0
#: Up to this much random extra spacing between probes (seconds).
JITTER_S = 0.05
MARGIN_S = "0.15"  # BRIDGE_RATE_LIMIT_MARGIN_S for second-long windows, as ``quota``
BUSY, PROBED = "alpha", "bravo"  # A (the deep backlog) and B (the one-at-a-time jobs)


@dataclass(frozen=True)
class Plan:
    backlog: int  # jobs per account in phase 1 (a whole number of windows of every quota)
    deep: int  # A's backlog in phase 2
    probes: int  # B's jobs in phase 2
    spacing_s: float = 1.0


FULL = Plan(backlog=60, deep=200, probes=10)
QUICK = Plan(backlog=20, deep=60, probes=5)


def client_id(account: str) -> str:
    return f"{account}-client"


def secret(account: str) -> str:
    return f"{account}-s3cret-value"


def accounts_file(directory: Path, sandbox: SandboxProc) -> Path:
    """``[accounts.NAME]`` for every account of ``QUOTAS``, all on the one sandbox."""
    tables = [
        textwrap.dedent(
            f"""
            [accounts.{name}]
            client_id = "{client_id(name)}"
            client_secret_env = "{name.upper()}_SECRET"
            environment = "sandbox"
            api_url = "{sandbox.url}"
            token_url = "{sandbox.token_url}"
            rate_limit = "{quota}"
            """
        )
        for name, quota in QUOTAS.items()
    ]
    path = directory / "accounts.toml"
    path.write_text("".join(tables))
    return path


def job(index: int, account: str) -> dict[str, Any]:
    return {**trips(index), "account": account}


def wait_done(client: BridgeClient, job_ids: list[str], *, timeout: float) -> None:
    """Until every job has finished; checks only the ones still open."""
    pending = set(job_ids)

    def done() -> bool:
        pending.difference_update([j for j in list(pending) if client.get(j).finished])
        return not pending

    wait_until(done, timeout=timeout, interval=0.2, what=f"{len(job_ids)} jobs")


def settle(seconds: float = 1.5) -> None:
    """Let every quota window empty, so the next phase starts from idle (no event to wait for)."""
    time.sleep(seconds)


# -- phase 1: quota use ----------------------------------------------------------------


def use_of(log: list[dict[str, Any]], account: str, since: float, until: float) -> dict[str, Any]:
    """One account's calls in ``[since, until]`` of the sandbox log, and its use of its quota."""
    rate = RateLimit.parse(QUOTAS[account])
    mine = [e for e in log if e["client_id"] == client_id(account) and since <= e["t"] <= until]
    accepted = sorted(e["t"] for e in mine if e["accepted"])
    achieved = achieved_rate(accepted, rate.window_s)
    paced_s = pacer_interval_s(account) * max(len(accepted) - 1, 0)
    return {
        "calls": len(mine),
        "accepted": len(accepted),
        "rate_limited": sum(1 for e in mine if e["status"] == 429),
        "achieved_per_s": achieved,
        "of_quota": achieved / (rate.limit / rate.window_s),
        "max_in_window": max_in_window(mine, rate.window_s),
        "drain_s": accepted[-1] - accepted[0] if accepted else math.nan,
        "paced_drain_s": paced_s,
        "paced_of_quota": len(accepted) / (paced_s + rate.window_s) / (rate.limit / rate.window_s),
        "arrivals": [round(t - since, 4) for t in accepted],
    }


def pacer_interval_s(account: str) -> float:
    """The bridge's spacing of one account's calls under a backlog: (window + margin) / N."""
    return Quota.of(RateLimit.parse(QUOTAS[account]), margin_s=float(MARGIN_S)).interval_s


def backlog_phase(client: BridgeClient, accounts: list[str], plan: Plan) -> tuple[float, float]:
    """Submit ``plan.backlog`` jobs to each of ``accounts`` at one moment; the span they ran in."""
    since = time.monotonic()
    ops = [job(i, name) for name in accounts for i in range(plan.backlog)]
    slowest = max(plan.backlog / RateLimit.parse(QUOTAS[name]).limit for name in accounts)
    wait_done(client, client.submit_many(ops), timeout=slowest * 2 + 60)
    return since, time.monotonic()


def quota_use(client: BridgeClient, sandbox: SandboxProc, plan: Plan) -> list[dict[str, Any]]:
    spans: dict[str, tuple[float, float]] = {}
    for name, quota in QUOTAS.items():
        print(f"  alone: {name} ({quota}, {plan.backlog} jobs)...", flush=True)
        spans[name] = backlog_phase(client, [name], plan)
        settle()
    print(f"  together: {', '.join(QUOTAS)} ({plan.backlog} jobs each)...", flush=True)
    together = backlog_phase(client, list(QUOTAS), plan)
    settle()
    log = sandbox.stats()["log"]
    rows = []
    for name, quota in QUOTAS.items():
        alone, both = use_of(log, name, *spans[name]), use_of(log, name, *together)
        ratio = both["of_quota"] / alone["of_quota"] if alone["of_quota"] else math.nan
        rows.append({"account": name, "quota": quota, "jobs": plan.backlog, "alone": alone, "together": both})
        rows[-1]["ratio"] = ratio
    return rows


# -- phase 2: start latency --------------------------------------------------------------


def probe(client: BridgeClient, plan: Plan) -> list[float]:
    """B's jobs one at a time, ``spacing_s`` apart; submission -> ``started_at`` of each, in ms."""
    submitted: list[tuple[str, float]] = []
    jitter = random.Random(7)  # the same gaps in both passes
    for i in range(plan.probes):
        at = time.time()
        submitted.append((client.submit(job(i, PROBED)), at))
        # The spacing is the load pattern, not a wait for an event. The jitter keeps the
        # submissions from drifting in step with anything periodic (the pacer's slots).
        time.sleep(plan.spacing_s + jitter.uniform(0, JITTER_S))
    wait_done(client, [j for j, _ in submitted], timeout=60)
    latencies = []
    for job_id, at in submitted:
        started = client.get(job_id).started_at
        if started is None:
            raise RuntimeError(f"job {job_id} finished without started_at")
        latencies.append((started.timestamp() - at) * 1000)
    return latencies


def latency_stats(values: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95), "max_ms": max(values)}


def start_latency(client: BridgeClient, sandbox: SandboxProc, plan: Plan) -> dict[str, Any]:
    print(f"  {PROBED}: {plan.probes} jobs one at a time, {BUSY} idle...", flush=True)
    idle = probe(client, plan)
    settle()
    print(f"  {PROBED}: {plan.probes} jobs one at a time, {BUSY} draining {plan.deep} jobs...", flush=True)
    since = time.monotonic()
    deep = client.submit_many([job(i, BUSY) for i in range(plan.deep)])
    time.sleep(plan.spacing_s)  # let A's backlog get going before B's first job
    busy = probe(client, plan)
    left = sum(1 for j in deep if not client.get(j).finished)
    wait_done(client, deep, timeout=plan.deep / RateLimit.parse(QUOTAS[BUSY]).limit * 2 + 60)
    a_use = use_of(sandbox.stats()["log"], BUSY, since, time.monotonic())
    result: dict[str, Any] = {"idle": latency_stats(idle), "busy": latency_stats(busy)}
    result["ratio"] = {k: result["busy"][k] / result["idle"][k] for k in result["idle"]}
    result |= {"idle_ms": idle, "busy_ms": busy, "busy_jobs_left_after_probes": left, "busy_account_use": a_use}
    return result


# -- the tables ----------------------------------------------------------------------------


def show(rows: list[dict[str, Any]], latency: dict[str, Any], plan: Plan) -> list[str]:
    headers = ["account", "quota", "jobs", "paced", "alone", "together", "together / alone"]
    headers += ["429 alone/together", "max ok/win together", "drain s together (paced)"]
    table = [
        [
            r["account"],
            r["quota"],
            r["jobs"],
            f"{r['alone']['paced_of_quota']:.1%}",
            f"{r['alone']['of_quota']:.1%}",
            f"{r['together']['of_quota']:.1%}",
            r["ratio"],
            f"{r['alone']['rate_limited']}/{r['together']['rate_limited']}",
            r["together"]["max_in_window"],
            f"{r['together']['drain_s']:.2f} ({r['together']['paced_drain_s']:.2f})",
        ]
        for r in rows
    ]
    title = f"Quota use (of each account's quota), one at a time vs together -- {WORKERS}x{THREADS} threads"
    title += f", API {API_LATENCY_MS:.0f} ms"
    first = print_table(title, headers, table, digits=3)
    lat_rows = [
        [f"{BUSY} idle", *(latency["idle"][k] for k in ("p50_ms", "p95_ms", "max_ms"))],
        [f"{BUSY} draining {plan.deep}", *(latency["busy"][k] for k in ("p50_ms", "p95_ms", "max_ms"))],
        ["ratio", *(latency["ratio"][k] for k in ("p50_ms", "p95_ms", "max_ms"))],
    ]
    title = f"Start latency of {plan.probes} {PROBED} jobs ({QUOTAS[PROBED]}), one every {plan.spacing_s:g} s"
    second = print_table(title, ["while", "p50 ms", "p95 ms", "max ms"], lat_rows)
    return [first, second]


def run_phase(*, quick: bool, workdir: Path) -> dict[str, Any]:
    """Phases 1 and 2: the three accounts of ``QUOTAS``."""
    plan = QUICK if quick else FULL
    with ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir, quota=None)
        stop.callback(sandbox.stop)
        sandbox.configure(
            clients={client_id(name): secret(name) for name in QUOTAS},
            client_quotas={client_id(name): quota for name, quota in QUOTAS.items()},
            latency_ms=API_LATENCY_MS,
        )
        secrets = {f"{name.upper()}_SECRET": secret(name) for name in QUOTAS}
        values = bridge_settings(
            redis_proc.url,
            sandbox,
            BRIDGE_ACCOUNTS_FILE=str(accounts_file(workdir, sandbox)),
            BRIDGE_RATE_LIMIT_MARGIN_S=MARGIN_S,
            **secrets,
        )
        workers = start_workers(values, count=WORKERS, concurrency=THREADS, workdir=workdir)
        stop.callback(stop_workers, workers)
        client = BridgeClient(settings_from(values))
        stop.callback(client.close)
        print("  warm-up: one job per account (its token)...", flush=True)
        wait_done(client, client.submit_many([job(0, name) for name in QUOTAS]), timeout=60)
        settle()
        rows = quota_use(client, sandbox, plan)
        latency = start_latency(client, sandbox, plan)
        tokens = {name: sandbox.stats()["by_client"].get(client_id(name), {}) for name in QUOTAS}
    return {
        "plan": plan.__dict__,
        "quotas": QUOTAS,
        "workers": WORKERS,
        "threads_per_worker": THREADS,
        "api_latency_ms": API_LATENCY_MS,
        "margin_s": float(MARGIN_S),
        "definition": "of quota = accepted / (last - first accepted arrival + window) / quota, per account; "
        "ratio = together / alone. start latency = submit (wall clock) -> started_at",
        "quota_use": rows,
        "start_latency": latency,
        "by_client_whole_run": tokens,
        "tables": show(rows, latency, plan),
    }
