"""Benchmark 5 -- scale: submitting 100,000 operations, what they cost in Redis, and deep queues.

1. Submit rate and memory, no worker running: ``BridgeClient.submit_many``
   (chunks of 1,000, one Lua call each) of realistic operations (trips of one
   vehicle-day, a callback URL, metadata), timed; Redis ``used_memory`` before
   and after / count = bytes per queued operation (job hash + queue message),
   also with an ``idempotency_key`` on every operation, and with Redis's
   ``hash-max-listpack-value`` raised. Where the submit time goes: each stage
   timed on its own (validation, JSON, Lua call). Since the quota scheduler a
   submit writes the job hash and its lane entry only: the Celery message is
   built by the dispatcher when the job gets its slot.
2. The same through HTTP, ``POST /v1/operations:batch`` of 1,000, when
   ``optimum_bridge.ingress.create_app`` is importable (served by uvicorn in a
   subprocess); skipped with a message otherwise.
3. Depth: 2 workers x 8 threads against a sandbox without quota; the time to
   execute operations 501-1,500 of a queue of 100,000 against one of 2,000,
   the callbacks delivered meanwhile, and the workers' memory (RSS and PSS,
   children included).
4. Dispatch at depth, no worker: ``scheduler.Dispatcher.run()`` called 200
   times in this process with 1,000 and with 100,000 jobs in the lane, each
   call giving exactly one slot (the limiter's log and pacer keys are cleared,
   untimed, before each call, so a slot is always free); microseconds per call
   and their ratio (flat = 1.0).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import settings_from, stop_workers, wait_until
from optimum_bridge.keys import DEFAULT_ACCOUNT, PRIORITIES, Keys
from optimum_bridge.quota.dispatcher import Dispatcher
from optimum_bridge.quota.limiter import RateLimiter
from optimum_bridge.quota.rate import RateLimit

from .common import bridge_settings, finished_counts, memory_mb, start_workers
from .receiver import start_services
from .report import (
    print_table,
    utc_stamp,
    workspace,
    write_result,
)
from .scale_submit import Stack, operations, submit_http, submit_python, submit_stages


def _finished(client: BridgeClient) -> int:
    counts = finished_counts(client.redis, Keys(client.settings.key_prefix))
    return sum(int(c or 0) for c in counts)


def depth_run(stack: Stack, depth: int, *, warmup: int = 500, measure: int = 1000) -> dict[str, Any]:
    """Queue ``depth`` operations, start workers, time ops ``warmup``..``warmup + measure`` (depth >= 2,000)."""
    stack.redis.flush()
    stack.sandbox.reset()
    stack.receiver.clear()
    client = BridgeClient(settings_from(stack.values))
    for start in range(0, depth, 10_000):
        client.submit_many(operations(min(10_000, depth - start), stack.receiver.url, start=start))
    redis_mb = stack.redis.used_memory() / 2**20
    workers = start_workers(stack.values, count=2, concurrency=8, workdir=stack.workdir)
    try:
        wait_until(lambda: _finished(client) >= warmup, timeout=300, interval=0.02, what="the warm-up")
        t0, done0, cb0 = time.monotonic(), _finished(client), len(stack.receiver.arrivals)
        target = warmup + measure
        wait_until(lambda: _finished(client) >= target, timeout=600, interval=0.02, what=f"{measure} ops")
        t1, done1, cb1 = time.monotonic(), _finished(client), len(stack.receiver.arrivals)
        memory = memory_mb(workers)
        keys = Keys(client.settings.key_prefix)
        queued = sum(int(client.redis.zcard(keys.lane(priority))) for priority in PRIORITIES)
    finally:
        stop_workers(workers)
    return {
        "depth": depth,
        "queued_at_end": queued,
        "redis_mb_queued": redis_mb,
        "s_per_1000": (t1 - t0) / (done1 - done0) * 1000,
        "ops_per_s": (done1 - done0) / (t1 - t0),
        "callbacks_per_s": (cb1 - cb0) / (t1 - t0),
        **memory,
    }


def dispatch_cost(stack: Stack, depth: int, *, runs: int = 200) -> dict[str, Any]:
    """Microseconds per ``Dispatcher.run()`` giving one slot, with ``depth`` jobs waiting in the lane."""
    stack.redis.flush()
    client = BridgeClient(settings_from(stack.values))
    for start in range(0, depth, 10_000):
        client.submit_many(operations(min(10_000, depth - start), stack.receiver.url, start=start))
    keys = Keys(client.settings.key_prefix)
    limiter = RateLimiter(client.redis, keys, RateLimit.parse("100000/s"))
    dispatcher = Dispatcher(client.redis, keys, {DEFAULT_ACCOUNT: limiter.quota}, handoff_s=10.0)
    dispatcher.run(DEFAULT_ACCOUNT)  # loads the script; gives one slot like every timed call
    timings = []
    for _ in range(runs):
        client.redis.delete(limiter.log_key)  # a slot is free now: each run gives one
        client.redis.hdel(limiter.state_key, "tat")
        started = time.perf_counter()
        done = dispatcher.run(DEFAULT_ACCOUNT)
        timings.append(time.perf_counter() - started)
        if done.given != 1:
            raise RuntimeError(f"a timed dispatch gave {done.given} slots ({done.outcome}), expected 1")
    timings.sort()
    waiting = int(client.redis.zcard(keys.lane("normal")))
    client.close()
    return {
        "depth": depth,
        "runs": runs,
        "waiting_at_end": waiting,
        "median_us": timings[len(timings) // 2] * 1e6,
        "mean_us": sum(timings) / len(timings) * 1e6,
        "p95_us": timings[int(len(timings) * 0.95)] * 1e6,
    }


def run(*, quick: bool) -> Path:
    """Quick: 10,000 ops submitted, depth 10,000 vs 1,000. Full: 20,000 and 100,000, depth 100,000 vs 1,000."""
    counts = [10_000] if quick else [20_000, 100_000]
    deep = 10_000 if quick else 100_000
    stamp = utc_stamp()
    with workspace("scale") as workdir, ExitStack() as stop:
        redis_proc, sandbox, receiver = start_services(stop, workdir, quota=None)
        values = bridge_settings(redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT="100000/s", BRIDGE_KEY_PREFIX="sc:")
        stack = Stack(redis_proc, sandbox, receiver, workdir, values)
        submits = []
        for count in counts:
            print(f"  submit_many: {count} ops", flush=True)
            submits.append(submit_python(stack, count))
        submits.append(submit_python(stack, counts[0], idempotent=True))
        submits.append(submit_python(stack, counts[0], listpack=True))
        profile = submit_stages(stack)
        print(f"  HTTP batch: {counts[-1]} ops", flush=True)
        http = submit_http(stack, counts[-1])
        submits.append(http)
        depths = []
        for depth in (2_000, deep, 2_000):  # shallow before and after: machine drift shows
            print(f"  depth {depth}: 2 workers x 8 threads", flush=True)
            depths.append(depth_run(stack, depth))
        dispatches = []
        for depth in (1_000, deep, 1_000):
            print(f"  dispatch: 200 Dispatcher.run() at depth {depth}", flush=True)
            dispatches.append(dispatch_cost(stack, depth))
    return report(quick, stamp, submits=submits, profile=profile, depths=depths, dispatches=dispatches)


def report(
    quick: bool,
    stamp: str,
    *,
    submits: list[dict[str, Any]],
    profile: dict[str, float],
    depths: list[dict[str, Any]],
    dispatches: list[dict[str, Any]],
) -> Path:
    rows = [
        [s["path"], s.get("count", "-"), s.get("ops_per_s", "skipped"), s.get("bytes_per_op", "-")] for s in submits
    ]
    texts = [print_table("Scale -- submit, no worker running", ["path", "ops", "ops/s", "bytes/op"], rows, digits=0)]
    for s in submits:
        if "skipped" in s:
            print(f"HTTP batch skipped: {s['skipped']}")
    stages = [(k, profile[f"{k}_us"]) for k in ("validate", "build", "lua")]
    detail = ", ".join(f"{k} {us:.0f} us ({us / profile['full_us']:.0%})" for k, us in stages)
    print(f"submit stages per op ({profile['count']} ops, {profile['full_us']:.0f} us in all): {detail}")
    texts.append(f"submit stages per op: {detail}")
    first = submits[0]
    line = (
        f"per op: job hash {first['job_hash_bytes']} B, lane entry {first['lane_bytes_per_op']:.0f} B, "
        f"Celery messages queued at submit: {first['queued_messages']}"
    )
    print(line)
    texts.append(line)
    headers = ["queued", "s per 1,000", "ops/s", "callbacks/s", "Redis MiB queued", "workers RSS MiB", "PSS MiB"]
    rows = [
        [d["depth"], d["s_per_1000"], d["ops_per_s"], d["callbacks_per_s"], d["redis_mb_queued"], *memory]
        for d in depths
        for memory in [(d["rss_mb"], d["pss_mb"])]
    ]
    texts.append(print_table("Scale -- execution at depth, 2 workers x 8 threads, no quota", headers, rows))
    shallow = [d["s_per_1000"] for d in depths if d["depth"] == 2_000]
    deep = next(d for d in depths if d["depth"] != 2_000)
    ratio = deep["s_per_1000"] / (sum(shallow) / len(shallow))
    print(f"time per 1,000 with {deep['depth']} queued / with 2,000 queued (mean of both): {ratio:.2f}")
    headers = ["queued", "runs", "median us", "mean us", "p95 us"]
    rows = [[d["depth"], d["runs"], d["median_us"], d["mean_us"], d["p95_us"]] for d in dispatches]
    texts.append(print_table("Scale -- Dispatcher.run() giving one slot, no worker", headers, rows, digits=0))
    shallow_us = [d["median_us"] for d in dispatches if d["depth"] == 1_000]
    deep_us = next(d for d in dispatches if d["depth"] != 1_000)
    dispatch_ratio = deep_us["median_us"] / (sum(shallow_us) / len(shallow_us))
    line = f"dispatch median with {deep_us['depth']} waiting / with 1,000 (mean of both): {dispatch_ratio:.2f}"
    print(line)
    texts.append(line)
    best = max((s.get("ops_per_s", 0.0) for s in submits if s["path"] == "python submit_many"), default=0.0)
    plain = [s for s in submits if s["path"] == "python submit_many"]
    targets = {
        "bytes_per_op <= 2048 (no idempotency key)": all(s["bytes_per_op"] <= 2048 for s in plain),
        "bytes_per_op <= 2048 (with idempotency key)": all(
            s["bytes_per_op"] <= 2048 for s in submits if "idempotency_key" in s["path"]
        ),
        "submit >= 5000 ops/s (python)": best >= 5000,
        "dispatch flat with depth (ratio <= 1.25)": dispatch_ratio <= 1.25,
    }
    print("targets: " + ", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    record = {
        "quick": quick,
        "submits": submits,
        "submit_profile": profile,
        "depths": depths,
        "depth_ratio": ratio,
        "dispatches": dispatches,
        "dispatch_ratio": dispatch_ratio,
        "targets": targets,
        "tables": texts,
    }
    path = write_result("scale", record, stamp=stamp)
    print(f"\nwrote {path}")
    return path
