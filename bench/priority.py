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

import bisect
import json
import math
import random
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import RedisServer, settings_from, stop_workers, wait_until
from optimum_bridge.devstack.processes import stop_process
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.sandbox.fleet import generate_fleet
from optimum_bridge.sandbox.state import max_in_window

from .common import SandboxProc, bridge_settings, env_with_path, ready_info, start_redis, start_sandbox, start_workers
from .report import ROOT, chart_path, percentile, print_table, utc_stamp, workspace, write_result

OLD_COMMIT = "8dbc670"
PLATES = generate_fleet(42, 60).plates()
PROCS, THREADS = 2, 4
MARGIN_S = {"s": "0.15", "m": "0.25"}  # per window unit: as bench.quota (the default at minutes)
SEED = 20261202


@dataclass(frozen=True)
class Design:
    """One side of the comparison: which ``optimum_bridge`` runs, and whether it knows priorities."""

    name: str
    pythonpath: str | None  # None: this tree
    priorities: bool


@dataclass(frozen=True)
class Plan:
    """One quota's scenario."""

    quota: str
    bulk: int
    urgent: int
    gap_s: float


FULL = [Plan("60/m", 150, 10, 7.0), Plan("30/m", 150, 10, 7.0)]
QUICK = [Plan("10/s", 40, 6, 0.5)]
FORECAST_FULL = ("60/m", 60, 20)  # quota, single jobs, batch size
FORECAST_QUICK = ("10/s", 30, 10)


def margin(quota: str) -> str:
    return MARGIN_S["s" if quota.endswith("/s") else "m"]


def interval_s(quota: str) -> float:
    """The scheduler's slot interval at this quota: (window + margin) / limit, rounded up to the ms."""
    rate = RateLimit.parse(quota)
    window_ms = round((rate.window_s + float(margin(quota))) * 1000)
    return -(-window_ms // rate.limit) / 1000


def trips(index: int, priority: str | None) -> dict[str, Any]:
    op: dict[str, Any] = {  # each makes its own call (coalesce: False): the benchmark counts calls
        "method": "GET",
        "coalesce": False,
        "path": "/Geolocation/Trips",
        "query": {
            "registrationNumber": PLATES[index % len(PLATES)],
            "startDate": "2026-11-26T00:00:00",
            "endDate": "2026-11-27T00:00:00",
        },
    }
    return op | ({"priority": priority} if priority else {})


def vehicle(index: int, priority: str | None) -> dict[str, Any]:
    """An urgent job: its path names it in the sandbox's call log."""
    op: dict[str, Any] = {"method": "GET", "path": f"/Vehicles/{PLATES[index % len(PLATES)]}"}
    return op | ({"priority": priority} if priority else {})


def extract_old(workdir: Path) -> Path:
    """``git archive <OLD_COMMIT> optimum_bridge | tar -x -C <dir>``; the directory to put on ``PYTHONPATH``."""
    target = workdir / f"old-{OLD_COMMIT}"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", OLD_COMMIT, "optimum_bridge"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


class Driver:
    """``bench.submitter`` in a subprocess: a producer for the design on its path."""

    def __init__(self, values: dict[str, str], design: Design, workdir: Path) -> None:
        env = env_with_path(values, design.pythonpath)
        self._stderr = (workdir / "submitter.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.submitter"],
            env=env,
            cwd=workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.process.stdin is None or self.process.stdout is None:
            raise RuntimeError("the submitter has no pipes")
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the submitter exited (code {self.process.poll()}); see submitter.log")
        reply = dict(json.loads(line))
        if "error" in reply:
            raise RuntimeError(f"submitter: {reply['error']}")
        return reply

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        stop_process(self.process, grace_s=5)  # type: ignore[arg-type]
        self._stderr.close()


@dataclass
class Stack:
    redis: RedisServer
    sandbox: SandboxProc
    workdir: Path
    old: Path


def _check_package(design: Design, where: str, what: str) -> None:
    """Fail loudly unless ``where`` (a module path) is the tree ``design`` says."""
    expected = design.pythonpath or str(ROOT)
    if not where.startswith(expected):
        raise RuntimeError(f"{what} of design {design.name!r} imported {where}, expected under {expected}")


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
            _check_package(design, ready_info(stack.workdir, worker).split(" ", 1)[1], f"worker {worker.name}")
        _check_package(design, driver.ask({"where": True})["package"], "the submitter")
        lane = "bulk" if design.priorities else None
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


# -- report -----------------------------------------------------------------------------------


def show(results: list[dict[str, Any]]) -> str:
    headers = ["quota", "design", "urgent", "API p50 s", "API p95 s", "API max s"]
    headers += ["started_at p50 s", "p95 s", "max s", "goal p95 <= s", "goal", "429", "max ok/win"]
    rows = []
    for r in results:
        goal = r["interval_s"] + 0.1
        new = r["design"].startswith("new")
        met = ("met" if r["start"]["p95"] <= goal else "MISSED") if new else "-"
        api, start = r["api"], r["start"]
        row = [r["quota"], r["design"], r["urgent"], api["p50"], api["p95"], api["max"]]
        row += [start["p50"], start["p95"], start["max"], round(goal, 3), met]
        rows.append([*row, r["rate_limited"], r["max_accepted_in_window"]])
    title = (
        f"Urgent start latency, {PROCS} procs x {THREADS} threads, deep bulk backlog "
        "(API = submit -> arrival at the API; started_at: the old design records none)"
    )
    text = print_table(title, headers, rows)
    for quota in dict.fromkeys(r["quota"] for r in results):
        pair = {r["design"].split()[0]: r["api"] for r in results if r["quota"] == quota}
        if "old" in pair and "new" in pair:
            line = (
                f"{quota}: old / new (submit -> API arrival), p50 {pair['old']['p50'] / pair['new']['p50']:.0f}x, "
                f"p95 {pair['old']['p95'] / pair['new']['p95']:.0f}x"
            )
            print(line)
            text += "\n" + line
    return text


def show_forecast(fc: dict[str, Any], results: list[dict[str, Any]]) -> str:
    headers = ["quota", "jobs", "|error| p50 s", "p95 s", "max s", "mean error s", "bound +- s", "within bound"]
    err = fc["abs_error"]
    row = [fc["quota"], fc["jobs"], err["p50"], err["p95"], err["max"], fc["mean_error_s"], fc["bound_s"]]
    row.append(f"{fc['within_bound']}/{fc['jobs'] - fc['without_forecast']}")
    text = print_table("Forecast error (estimated_start_at read right after submit - started_at)", headers, [row])
    b = fc["batch"]
    line = f"batch of {b['size']} behind them: estimated_done_at - last job's started_at = {b['error_s']:+.2f} s"
    if fc["without_forecast"]:
        line += f"\n{fc['without_forecast']} job(s) had started before their forecast was read (no forecast)"
    for r in results:
        err = r["forecast_abs_error"]
        if r["design"].startswith("new") and not math.isnan(err["max"]):
            line += (
                f"\nurgent jobs into the {r['quota']} backlog: |estimated_start_at - started_at| "
                f"p50 {err['p50']:.2f} s, p95 {err['p95']:.2f} s, max {err['max']:.2f} s "
                f"(bound +- {r['interval_s'] + 1:.2f} s)"
            )
    print(line)
    return text + "\n" + line


def chart(results: list[dict[str, Any]], path: Path) -> None:
    """Per quota (rows) and design (columns): calls so far against time, urgent jobs marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quotas = list(dict.fromkeys(r["quota"] for r in results))
    designs = list(dict.fromkeys(r["design"] for r in results))
    fig, axes = plt.subplots(len(quotas), len(designs), figsize=(7 * len(designs), 3.6 * len(quotas)), squeeze=False)
    for row, quota in enumerate(quotas):
        for col, design in enumerate(designs):
            ax = axes[row][col]
            r = next(x for x in results if x["quota"] == quota and x["design"] == design)
            calls = sorted(r["arrivals"])
            times = [c[0] for c in calls]
            ax.step(times, range(1, len(times) + 1), where="post", color="0.5", lw=1, label="calls (all)")
            for job in r["urgent_jobs"]:
                at = job["submit_s"] + job["api_s"]
                count = bisect.bisect_right(times, at)
                ax.hlines(count, job["submit_s"], at, color="tab:red", lw=1, alpha=0.6)
                ax.plot([at], [count], "o", color="tab:red", ms=4)
                ax.plot([job["submit_s"]], [count], "v", color="tab:orange", ms=5)
            ax.plot([], [], "v", color="tab:orange", label="urgent submitted")
            ax.plot([], [], "o", color="tab:red", label="its call reaches the API")
            refused = [c[0] for c in calls if not c[2]]
            if refused:
                ax.plot(refused, [0] * len(refused), "rx", label="429")
            ax.set_title(f"{design}, {quota}: urgent submit -> API p95 {r['api']['p95']:.2f} s", fontsize=9)
            ax.set_xlabel("seconds since the backlog was submitted")
            ax.set_ylabel("calls so far")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Calls against time (sandbox call log): urgent jobs into a deep bulk backlog", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(*, quick: bool) -> Path:
    """Quick: 10/s, 40 bulk, 6 urgent (~2 min). Full: 60/m and 30/m, 150 bulk, 10 urgent (~12 min)."""
    plans = QUICK if quick else FULL
    fc_quota, fc_singles, fc_batch = FORECAST_QUICK if quick else FORECAST_FULL
    stamp = utc_stamp()
    results = []
    with workspace("priority") as workdir, ExitStack() as stop:
        old = extract_old(workdir)
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
