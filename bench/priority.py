"""Benchmark 6 -- priority: how long an urgent job waits behind a deep backlog, old design against new.

Scenario, per quota: 2 worker processes x 4 threads, ``BULK`` bulk jobs
(``GET /Geolocation/Trips``) submitted at once, then ``URGENT`` jobs
(``GET /Vehicles/<plate>``, one plate each) submitted one at a time, about
every ``GAP`` seconds (uniform in GAP +- 1 s, so at a random phase of the slot
grid; the same seeded arrival times for both designs). An urgent job's
latency is measured two ways: **submit -> API**, its call's arrival in the
sandbox's call log (``time.monotonic``, one clock for every process on the
machine) minus the monotonic clock read just before its ``submit``, for both
designs; and **submit -> started_at** (set by the worker just before the call
is sent, against the wall clock read just before ``submit``), for the new
design only, since the old one records no ``started_at``.

- **new**: this tree (the quota scheduler); urgent jobs have
  ``"priority": "urgent"``, the backlog ``"bulk"``.
- **old**: commit ``8dbc670`` (the sliding-log limiter each worker thread
  waited on), extracted with ``git archive 8dbc670 optimum_bridge | tar -x``
  into the scratch directory; its workers and its producer (``bench.submitter``
  in a subprocess, so it is the old ``BridgeClient`` that submits) run with
  that directory first on ``PYTHONPATH``. Its jobs have no priority field: an
  urgent job's latency is its FIFO wait behind the backlog.

Both designs are measured in the same run, on the same sandbox and Redis.
A run ends when every urgent job's call has reached the API (the rest of the
backlog is not drained). The new design's urgent jobs have their forecast read
right after their submit too. Then the **forecast**: new design only, ``FORECAST`` normal jobs
submitted one at a time into an idle account, each one's ``estimated_start_at``
read right after its submit, and a batch behind them (``get_batch``'s
``estimated_done_at`` against its last job's start); the error is the forecast
minus the actual ``started_at``, against the bound +- (slot interval + 1 s).
Chart: calls against time, urgent submissions and calls marked, old vs new.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import settings_from, stop_workers, wait_until
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.sandbox.state import max_in_window

from .common import bridge_settings, extract_old, ready_info, start_redis, start_sandbox, start_workers, trips
from .priority_report import chart, show, show_forecast
from .priority_setup import (
    FORECAST_FULL,
    FORECAST_QUICK,
    FULL,
    OLD_COMMIT,
    PROCS,
    QUICK,
    SEED,
    THREADS,
    Design,
    Driver,
    Plan,
    Stack,
    check_package,
    interval_s,
    margin,
    vehicle,
)
from .report import chart_path, percentile, utc_stamp, workspace, write_result


def scenario(stack: Stack, design: Design, plan: Plan) -> dict[str, Any]:
    """One design at one quota: the backlog, the urgent arrivals, until every urgent job started."""
    stack.redis.flush()
    stack.sandbox.reset()
    stack.sandbox.configure(quota=plan.quota)
    values = bridge_settings(
        stack.redis.url,
        stack.sandbox,
        OPTIMUM_RATE_LIMIT=plan.quota,
        BRIDGE_RATE_LIMIT_MARGIN_S=margin(plan.quota),
        BRIDGE_KEY_PREFIX="prio:",
    )
    workers = start_workers(
        values, count=PROCS, concurrency=THREADS, workdir=stack.workdir, pythonpath=design.pythonpath
    )
    driver = Driver(values, design, stack.workdir)
    try:
        for worker in workers:
            check_package(design, ready_info(stack.workdir, worker).split(" ", 1)[1], f"worker {worker.name}")
        check_package(design, driver.ask({"where": True})["package"], "the submitter")
        lane = "bulk" if design.priorities else None
        if design.pythonpath is None:
            _warm_checker(stack, driver)
        backlog = driver.ask({"submit": [trips(i, lane) for i in range(plan.bulk)]})
        urgent = _arrivals(driver, design, plan, backlog["mono"])
        rate = RateLimit.parse(plan.quota)
        timeout = (plan.bulk + plan.urgent) / rate.limit * rate.window_s * 1.5 + 120
        paths = {u["path"] for u in urgent}

        def all_called() -> bool:  # the old design has no started_at: the API's log says when
            log = stack.sandbox.stats()["log"]
            return paths <= {e["path"] for e in log if e["accepted"]}

        wait_until(all_called, timeout=timeout, interval=0.25, what="every urgent job's call")
        jobs: dict[str, dict[str, Any]] = driver.ask({"get": [u["id"] for u in urgent]})["jobs"]
        stats = stack.sandbox.stats()
    finally:
        driver.stop()
        stop_workers(workers, grace_s=5)  # the old design's threads sleep on reservations
    return summarize(design, plan, backlog=backlog, urgent=urgent, jobs=jobs, stats=stats)


def _warm_checker(stack: Stack, driver: Driver) -> None:
    """Before the backlog: one job, whose check asks the workers for the account's OpenAPI document,
    then, once it is stored, one more, so the producer parses the document now. The first check
    after a document is stored parses it (0.3-0.5 s here) inside that ``submit``: were it one of
    the urgent jobs', it would count as their start latency, which is the scheduler's."""
    client = stack.redis.client()
    version = "prio:openapi:default:version"
    driver.ask({"submit": [trips(10_000)]})
    wait_until(lambda: bool(client.exists(version)), timeout=30, interval=0.1, what="the OpenAPI document")
    driver.ask({"submit": [trips(10_001)]})


def _arrivals(driver: Driver, design: Design, plan: Plan, origin: float) -> list[dict[str, Any]]:
    """Submit the urgent jobs one at a time at seeded times after ``origin``; each with its forecast."""
    rng = random.Random(f"{SEED}-{plan.quota}")  # same times for both designs
    due = origin + 2.0 + rng.uniform(0, plan.gap_s)
    urgent = []
    for index in range(plan.urgent):
        time.sleep(max(0.0, due - time.monotonic()))
        reply = driver.ask({"submit": [vehicle(index, "urgent" if design.priorities else None)]})
        job_id = reply["ids"][0]
        first_look = driver.ask({"get": [job_id]})["jobs"][job_id]
        urgent.append({"id": job_id, "path": vehicle(index, None)["path"], **reply, "at_submit": first_look})
        due += rng.uniform(plan.gap_s - 1, plan.gap_s + 1) if plan.gap_s > 1 else rng.uniform(0.5, 1.5) * plan.gap_s
    return urgent


def _wall(value: str | None) -> float:
    return math.nan if value is None else datetime.fromisoformat(value).timestamp()


def _stats(values: list[float]) -> dict[str, float]:
    """p50, p95 and max of the values that are numbers (NaN: not measured)."""
    known = [v for v in values if not math.isnan(v)]
    return {"p50": percentile(known, 50), "p95": percentile(known, 95), "max": max(known, default=math.nan)}


def summarize(
    design: Design,
    plan: Plan,
    *,
    backlog: dict[str, Any],
    urgent: list[dict[str, Any]],
    jobs: dict[str, dict[str, Any]],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """Latencies of the urgent jobs, from their status and from the sandbox's log; the calls for the chart."""
    log = stats["log"]
    by_path = {entry["path"]: entry["t"] for entry in log if entry["accepted"]}
    rows = []
    for item in urgent:
        job = jobs[item["id"]]
        start_s = _wall(job["started_at"]) - item["wall"]
        api_s = by_path.get(item["path"], math.nan) - item["mono"]
        rows.append({"submit_s": item["mono"] - backlog["mono"], "start_s": start_s, "api_s": api_s, **job})
        rows[-1]["estimated_at_submit"] = item["at_submit"]["estimated_start_at"]
    origin = backlog["mono"]
    rate = RateLimit.parse(plan.quota)
    return {
        "design": design.name,
        "quota": plan.quota,
        "bulk": plan.bulk,
        "urgent": plan.urgent,
        "interval_s": interval_s(plan.quota),
        "start": _stats([r["start_s"] for r in rows]),
        "forecast_abs_error": _stats([abs(_wall(r["estimated_at_submit"]) - _wall(r["started_at"])) for r in rows]),
        "api": _stats([r["api_s"] for r in rows]),
        "urgent_jobs": rows,
        "calls": len(log),
        "rate_limited": stats["rate_limited"],
        "max_accepted_in_window": stats["max_in_window"],
        "max_attempted_in_window": max_in_window([{**e, "accepted": True} for e in log], rate.window_s),
        "arrivals": [[round(e["t"] - origin, 4), e["path"].startswith("/Vehicles/"), bool(e["accepted"])] for e in log],
    }


# -- forecast ----------------------------------------------------------------------------------


def forecast(stack: Stack, quota: str, singles: int, batch_size: int) -> dict[str, Any]:
    """Normal jobs one at a time, each forecast read right after its submit; then a batch behind them."""
    stack.redis.flush()
    stack.sandbox.reset()
    stack.sandbox.configure(quota=quota)
    values = bridge_settings(
        stack.redis.url,
        stack.sandbox,
        OPTIMUM_RATE_LIMIT=quota,
        BRIDGE_RATE_LIMIT_MARGIN_S=margin(quota),
        BRIDGE_KEY_PREFIX="fc:",
    )
    workers = start_workers(values, count=PROCS, concurrency=THREADS, workdir=stack.workdir)
    client = BridgeClient(settings_from(values))
    try:
        forecasts: dict[str, float] = {}
        for index in range(singles):
            job_id = client.submit(trips(index, "normal"))
            status = client.get(job_id)
            forecasts[job_id] = status.estimated_start_at.timestamp() if status.estimated_start_at else math.nan
        batch = client.submit_batch([trips(singles + i, "normal") for i in range(batch_size)])
        batch_forecast = client.get_batch(batch.id).estimated_done_at
        rate = RateLimit.parse(quota)
        every = [*forecasts, *batch.job_ids]
        wait_until(
            lambda: all(client.get(j).started_at for j in every),
            timeout=len(every) / rate.limit * rate.window_s * 2 + 60,
            interval=0.5,
            what="every forecast job to start",
        )
        started = {j: client.get(j).started_at for j in every}
    finally:
        client.close()
        stop_workers(workers, grace_s=5)
    errors = [
        forecasts[j] - s.timestamp() if s is not None and not math.isnan(forecasts[j]) else math.nan
        for j, s in ((j, started[j]) for j in forecasts)
    ]
    measured = [e for e in errors if not math.isnan(e)]
    last = max(s.timestamp() for j, s in started.items() if j in batch.job_ids and s is not None)
    bound = interval_s(quota) + 1.0
    return {
        "quota": quota,
        "jobs": singles,
        "without_forecast": len(errors) - len(measured),
        "interval_s": interval_s(quota),
        "bound_s": bound,
        "abs_error": _stats([abs(e) for e in measured]),
        "mean_error_s": sum(measured) / len(measured) if measured else math.nan,
        "within_bound": sum(1 for e in measured if abs(e) <= bound),
        "errors_s": errors,
        "batch": {
            "size": batch_size,
            "estimated_done_at": batch_forecast.isoformat() if batch_forecast else None,
            "last_started_at": datetime.fromtimestamp(last).isoformat(),
            "error_s": batch_forecast.timestamp() - last if batch_forecast else math.nan,
        },
    }


def run(*, quick: bool) -> Path:
    """Quick: 10/s, 40 bulk, 6 urgent (~2 min). Full: 60/m and 30/m, 150 bulk, 10 urgent (~12 min)."""
    plans = QUICK if quick else FULL
    fc_quota, fc_singles, fc_batch = FORECAST_QUICK if quick else FORECAST_FULL
    stamp = utc_stamp()
    results = []
    with workspace("priority") as workdir, ExitStack() as stop:
        old = extract_old(workdir, OLD_COMMIT)
        designs = [Design(f"old {OLD_COMMIT}", str(old), False), Design("new (scheduler)", None, True)]
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir, quota=plans[0].quota)
        stop.callback(sandbox.stop)
        stack = Stack(redis_proc, sandbox, workdir, old)
        for plan in plans:
            for design in designs:
                print(f"  {plan.quota}: {design.name}, {plan.bulk} bulk + {plan.urgent} urgent...", flush=True)
                results.append(scenario(stack, design, plan))
                r = results[-1]
                print(f"    urgent submit -> API p50 {r['api']['p50']:.2f} s, p95 {r['api']['p95']:.2f} s", flush=True)
        print(f"  forecast: {fc_singles} normal jobs at {fc_quota}, then a batch of {fc_batch}...", flush=True)
        fc = forecast(stack, fc_quota, fc_singles, fc_batch)
    text = show(results)
    fc_text = show_forecast(fc, results)
    png = chart_path("priority", stamp)
    chart(results, png)
    record = {
        "quick": quick,
        "old_commit": OLD_COMMIT,
        "procs": PROCS,
        "threads": THREADS,
        "margin_s": {p.quota: float(margin(p.quota)) for p in plans},
        "definition": "API = sandbox arrival (monotonic) - monotonic just before submit (both designs); "
        "start = job started_at - wall clock just before submit (new design only: the old one records no "
        "started_at); forecast error = estimated_start_at read right after "
        "submit - started_at",
        "goal": "new design: urgent start p95 <= slot interval + 0.1 s; forecast within +- (interval + 1 s)",
        "scenarios": results,
        "forecast": fc,
        "tables": [text, fc_text],
        "chart": png.name,
    }
    path = write_result("priority", record, stamp=stamp)
    print(f"\nwrote {path} and {png}")
    return path
