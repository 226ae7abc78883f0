"""Benchmark -- schedules (spec §15): tick latency and the Redis cost of idle schedules.

3 bridge worker processes (2 threads each) on a private Redis, the sandbox
unlimited. **Idle cost**: Redis commands per second (``INFO``'s
``total_commands_processed``, and the commands run inside scripts from
``INFO commandstats``) with the workers idle and no schedule -- the baseline,
measured in the same run -- then with 100 idle schedules (their next tick a
day away); the difference is what the schedules cost. **Tick latency**: 100
schedules ``every = "10s"`` (5 s quick), all ticking at the same instants,
each making a one-call batch; latency = the batch's ``submitted_at`` minus
its scheduled tick, p50/p99, beside the baseline of one schedule alone. Every
tick must make exactly one batch (counted by tick).
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import RedisServer, settings_from, stop_workers, wait_until
from optimum_bridge.keys import Keys, text
from optimum_bridge.schedules.model import Schedule
from optimum_bridge.schedules.runner import ScheduleRunner
from optimum_bridge.schedules.store import ScheduleStore, from_ms

from .common import SandboxProc, bridge_settings, start_redis, start_sandbox, start_workers
from .report import percentile, print_table, utc_stamp, workspace, write_result

PROCS, THREADS, SCHEDULES = 3, 2, 100


def _commands(client: redis.Redis) -> tuple[int, int]:
    """Commands processed so far (``total_commands_processed``: those inside scripts included), and EVALSHAs."""
    stats = client.info("commandstats")
    return int(client.info("stats")["total_commands_processed"]), int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def idle_rate(client: redis.Redis, seconds: float) -> tuple[float, float]:
    """Commands per second over ``seconds``: (all, EVALSHA calls)."""
    before, started = _commands(client), time.monotonic()
    time.sleep(seconds)  # a rate over a fixed span: nothing to wait for
    after, elapsed = _commands(client), time.monotonic() - started
    return (after[0] - before[0]) / elapsed, (after[1] - before[1]) / elapsed


def timer_only(redis_proc: RedisServer, sandbox: SandboxProc, *, schedules: int, seconds: float) -> float:
    """The schedules timer alone: ``PROCS`` runners looping as the upkeep runs them, on a Redis with nothing else
    (no worker); Redis commands per second, those inside the script included."""
    client = redis_proc.client()
    redis_proc.flush()
    settings = settings_from(bridge_settings(redis_proc.url, sandbox, BRIDGE_KEY_PREFIX="timer:"))
    store = ScheduleStore(client, Keys("timer:"))
    for i in range(schedules):
        store.put(f"idle-{i}", _schedule("24h", i))
    stop = threading.Event()

    def loop() -> None:
        runner = ScheduleRunner(ScheduleStore(redis_proc.client(), Keys("timer:")), BridgeClient(settings))
        while not stop.is_set():
            stop.wait(runner.run())

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(PROCS)]
    for thread in threads:
        thread.start()
    time.sleep(2)  # the first look of each (the file's schedules, script loads) is not the steady state
    rate = idle_rate(client, seconds)
    stop.set()
    for thread in threads:
        thread.join(5)
    return rate[0]


def _schedule(period: str, index: int) -> Schedule:
    operation = {"method": "GET", "path": f"/Vehicles/bench-{index}", "coalesce": False}
    return Schedule.model_validate({"every": period, "overlap": "queue", "operations": [operation]})


def tick_latency(store: ScheduleStore, client: BridgeClient, *, count: int, period: str, ticks: int) -> dict[str, Any]:
    """``count`` schedules of ``period`` for ``ticks`` ticks: each batch's latency from its tick, batches per tick."""
    names = [f"lat{count}-{i}" for i in range(count)]
    for i, name in enumerate(names):
        store.put(name, _schedule(period, i))
    first = min(store.next_tick_ms(name) or 0 for name in names)
    period_s = _schedule(period, 0).ticks.every_s or 1
    last = first + (ticks - 1) * period_s * 1000

    def made_all() -> bool:
        return all(len(store.outcome(name, last) or "") == 32 for name in names)

    wait_until(made_all, timeout=ticks * period_s + 60, interval=0.5, what=f"{ticks} ticks of {count} schedules")
    for name in names:
        store.delete(name)
    latencies: list[float] = []
    per_tick: dict[tuple[str, str], int] = {}
    for name in names:
        for tick_ms, batch_id in _batches(client, name).items():
            if first <= tick_ms <= last:
                status = client.get_batch(batch_id)
                latencies.append((status.submitted_at - from_ms(tick_ms)).total_seconds() * 1000)
                tick = str(status.metadata["tick"])
                per_tick[(name, tick)] = per_tick.get((name, tick), 0) + 1
    return {
        "schedules": count,
        "period": period,
        "batches": len(latencies),
        "expected": count * ticks,
        "batches_per_tick": sorted(set(per_tick.values())),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }


def _batches(client: BridgeClient, name: str) -> dict[int, str]:
    """Every tick of ``name`` that made a batch (ms), with the batch's id."""
    found = {}
    pattern = f"{Keys(client.settings.key_prefix).schedule(name)}:tick:*"
    for key in client.redis.scan_iter(match=pattern, count=1000):
        outcome = text(client.redis.get(key) or b"")
        if len(outcome) == 32:
            found[int(text(key).rsplit(":", 1)[1])] = outcome
    return found


def run(*, quick: bool) -> Path:
    """Quick: 10 s idle spans, ticks every 5 s for 4 ticks. Full: 30 s spans, every 10 s for 6 ticks."""
    idle_s, period, ticks = (10.0, "5s", 4) if quick else (30.0, "10s", 6)
    stamp = utc_stamp()
    with workspace("schedules") as workdir, ExitStack() as stop:
        redis_proc: RedisServer = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir, quota=None)
        stop.callback(sandbox.stop)
        values = bridge_settings(redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT="1000/s")
        workers = start_workers(values, count=PROCS, concurrency=THREADS, workdir=workdir)
        stop.callback(stop_workers, workers)
        client = BridgeClient(settings_from(values))
        store = ScheduleStore(client.redis, Keys(client.settings.key_prefix))
        time.sleep(3)  # let the workers' start-up traffic (first heartbeats, documents) pass before measuring
        print(f"  idle: {PROCS} workers, no schedule, {idle_s:.0f} s", flush=True)
        baseline = idle_rate(client.redis, idle_s)
        for i in range(SCHEDULES):
            store.put(f"idle-{i}", _schedule("24h", i))
        print(f"  idle: {PROCS} workers, {SCHEDULES} idle schedules, {idle_s:.0f} s", flush=True)
        loaded = idle_rate(client.redis, idle_s)
        for i in range(SCHEDULES):
            store.delete(f"idle-{i}")
        timer_redis = start_redis(workdir)
        stop.callback(timer_redis.stop)
        print(
            f"  the timer alone: {PROCS} runners, no schedule, then {SCHEDULES} idle, {idle_s:.0f} s each", flush=True
        )
        timer = (
            timer_only(timer_redis, sandbox, schedules=0, seconds=idle_s),
            timer_only(timer_redis, sandbox, schedules=SCHEDULES, seconds=idle_s),
        )
        print(f"  ticks: 1 schedule every {period}, {ticks} ticks", flush=True)
        alone = tick_latency(store, client, count=1, period=period, ticks=ticks)
        print(f"  ticks: {SCHEDULES} schedules every {period}, {ticks} ticks", flush=True)
        many = tick_latency(store, client, count=SCHEDULES, period=period, ticks=ticks)
    idle_rows = [
        [f"{PROCS} idle workers, no schedule (baseline)", baseline[0], baseline[1]],
        [f"{PROCS} idle workers, {SCHEDULES} idle schedules", loaded[0], loaded[1]],
        ["  difference", loaded[0] - baseline[0], loaded[1] - baseline[1]],
        [f"the schedules timer alone x {PROCS}, no schedule", timer[0], ""],
        [f"the schedules timer alone x {PROCS}, {SCHEDULES} idle schedules", timer[1], ""],
    ]
    idle_text = print_table(
        "Redis commands/s (scripts' inner commands included)", ["", "all", "EVALSHA"], idle_rows, digits=1
    )
    tick_rows = [
        [
            f"{r['schedules']} x every {r['period']}",
            f"{r['batches']}/{r['expected']}",
            ",".join(map(str, r["batches_per_tick"])),
            r["p50_ms"],
            r["p99_ms"],
            r["max_ms"],
        ]
        for r in (alone, many)
    ]
    tick_text = print_table(
        f"Tick latency (scheduled tick -> batch created), {PROCS} workers x {THREADS} threads",
        ["schedules", "batches", "batches per tick", "p50 ms", "p99 ms", "max ms"],
        tick_rows,
        digits=0,
    )
    record = {
        "quick": quick,
        "workers": f"{PROCS} x {THREADS} threads",
        "idle": {"baseline_per_s": baseline, "schedules_per_s": loaded, "schedules": SCHEDULES, "span_s": idle_s},
        "timer_alone_per_s": {"no_schedule": timer[0], "idle_schedules": timer[1]},
        "ticks": {"alone": alone, "many": many},
        "tables": [idle_text, tick_text],
    }
    path = write_result("schedules", record, stamp=stamp)
    print(f"\nwrote {path}")
    return path
