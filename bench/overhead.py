"""Benchmark 2 -- overhead: what the bridge's guarantees cost against plain Celery.

Sandbox without quota or latency. End-to-end operations per second: from the
first submit to the last callback received and verified (Standard Webhooks)
by the bench's receiver. A: the bridge (``OPTIMUM_RATE_LIMIT=100000/s``;
``submit_many``; execute task + callback task). B: ``bench.plain_celery``'s
``plain.get_and_callback``: one task that does the same GET with its own
bearer token and POSTs a signed callback itself, queued with one
``send_task`` per operation. Same Redis, same pool, same concurrency; A and B
alternate (ABBA...) for several rounds in one run after a warm-up round each;
the figure is the ratio of the medians. Then, with 50 ms of API latency, the
bridge on the threads pool against the prefork pool (same concurrency),
alternated the same way, with the workers' resident memory (gevent too with
``BENCH_GEVENT=1``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from celery import Celery

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import CallbackReceiver, RedisServer, WorkerProcess, settings_from, stop_workers
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import CALLBACK_SECRET, SandboxProc, bridge_settings, memory_mb, start_workers
from .plain_celery import GET_AND_CALLBACK_TASK, make_app, plain_settings, send
from .receiver import start_services
from .report import (
    median,
    print_table,
    utc_stamp,
    workspace,
    write_result,
)

PLATES = generate_fleet(42, 60).plates()
UNLIMITED = "100000/s"
#: gevent runs about 2 ops/s with this broker (see the README), so a full round of it takes minutes:
#: it is measured only when asked for, with BENCH_GEVENT=1.
GEVENT = os.environ.get("BENCH_GEVENT") == "1" and importlib.util.find_spec("gevent") is not None
POOLS = ("threads", "prefork", "gevent") if GEVENT else ("threads", "prefork")


@dataclass
class Side:
    """One contender: how to submit a round, and its workers."""

    name: str
    workers: list[WorkerProcess]
    bridge: BridgeClient | None = None
    plain: Celery | None = None
    costs: dict[str, Any] = field(default_factory=dict)

    def submit(self, count: int, callback: str) -> list[str]:
        paths = [f"/Vehicles/{PLATES[i % len(PLATES)]}" for i in range(count)]
        if self.bridge is not None:
            return self.bridge.submit_many(
                [{"method": "GET", "path": p, "coalesce": False, "callback": {"url": callback}} for p in paths]
            )
        if self.plain is None:
            raise RuntimeError("a side needs a bridge client or a plain Celery app")
        ids = []
        for path in paths:
            job_id = uuid.uuid4().hex
            send(self.plain, GET_AND_CALLBACK_TASK, [job_id, path, {}, callback])
            ids.append(job_id)
        return ids


def one_round(side: Side, receiver: CallbackReceiver, count: int) -> dict[str, float]:
    """Submit ``count`` operations and wait for every verified callback."""
    started = time.monotonic()
    ids = side.submit(count, receiver.url)
    submitted = time.monotonic()
    arrivals = receiver.wait_for(ids, timeout=max(120.0, float(count)))  # gevent manages ~3 ops/s
    last = max(arrivals.values())
    return {"ops_per_s": count / (last - started), "wall_s": last - started, "submit_s": submitted - started}


def cpu_seconds(pids: list[int], *, children: bool = True) -> float:
    """User + system CPU of these processes and (``children``) theirs, e.g. prefork pool processes."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            for item in [proc, *(proc.children(recursive=True) if children else [])]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = item.cpu_times()
                    total += times.user + times.system
    return total


def costs_per_op(
    side: Side, receiver: CallbackReceiver, redis_proc: RedisServer, sandbox: SandboxProc, count: int
) -> None:
    """One more round, metered: Redis commands per operation (``INFO commandstats``; commands run
    inside Lua scripts are counted too, and so is the idle polling of the other side's workers) and
    CPU milliseconds per operation spent by the side's workers, Redis, the sandbox and this process
    (the submitting client and the receiver that verifies callbacks)."""
    client = redis_proc.client()
    client.config_resetstat()
    processes = {
        "workers": [w.process.pid for w in side.workers],
        "redis": [redis_proc.process.pid],
        "sandbox": [sandbox.process.pid],
        "bench (client + receiver)": [os.getpid()],
    }
    own = "bench (client + receiver)"  # its children are the other rows
    before = {name: cpu_seconds(pids, children=name != own) for name, pids in processes.items()}
    one_round(side, receiver, count)
    after = {name: cpu_seconds(pids, children=name != own) for name, pids in processes.items()}
    stats = client.info("commandstats")
    per_op = {name.removeprefix("cmdstat_"): int(v["calls"]) / count for name, v in stats.items()}
    per_op.pop("config|resetstat", None)
    per_op.pop("info", None)
    side.costs["redis_commands_per_op"] = dict(sorted(per_op.items(), key=lambda item: -item[1]))
    side.costs["cpu_ms_per_op"] = {name: 1000 * (after[name] - before[name]) / count for name in processes}


def alternate(sides: list[Side], receiver: CallbackReceiver, *, rounds: int, count: int, warmup: int) -> dict[str, Any]:
    """Warm up each side, then run ``rounds`` rounds, alternating the order (AB, BA, ...)."""
    for side in sides:
        one_round(side, receiver, warmup)
    results: dict[str, list[dict[str, float]]] = {side.name: [] for side in sides}
    for index in range(rounds):
        order = sides if index % 2 == 0 else sides[::-1]
        for side in order:
            results[side.name].append(one_round(side, receiver, count))
            print(f"    round {index + 1} {side.name}: {results[side.name][-1]['ops_per_s']:.0f} ops/s", flush=True)
    summary: dict[str, dict[str, Any]] = {
        name: {
            "median_ops_per_s": median([r["ops_per_s"] for r in rows]),
            "rounds": rows,
            **memory_mb(next(s for s in sides if s.name == name).workers),
        }
        for name, rows in results.items()
    }
    first, second = sides[0].name, sides[1].name
    medians = {name: median([r["ops_per_s"] for r in rows]) for name, rows in results.items()}
    return {
        "count": count,
        "rounds": rounds,
        "sides": summary,
        "ratio_of_medians": medians[first] / medians[second],
        "ratio": f"{first} / {second}",
        "callbacks_rejected": receiver.rejected,
        "callbacks_duplicated": receiver.duplicates,
    }


def _rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, side in result["sides"].items():
        figures = [r["ops_per_s"] for r in side["rounds"]]
        row = [name, side["median_ops_per_s"], min(figures), max(figures), side["rss_mb"], side["pss_mb"]]
        commands = side.get("redis_commands_per_op")
        rows.append([*row, sum(commands.values()) if commands else "-"])
    return rows


def run(*, quick: bool) -> Path:
    """Quick: 3 rounds of 300 (pools: 2 of 300). Full: 5 rounds of 1,000 (pools: 4 of 800)."""
    rounds, count, pool_rounds, pool_count = (3, 300, 2, 300) if quick else (5, 1000, 4, 800)
    procs, threads = 2, 4
    stamp = utc_stamp()
    with workspace("overhead") as workdir, ExitStack() as stop:
        redis_proc, sandbox, receiver = start_services(stop, workdir, quota=None)

        values = bridge_settings(redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT=UNLIMITED, BRIDGE_KEY_PREFIX="ovb:")
        plain_values = plain_settings(
            redis_proc.url, sandbox.url, sandbox.token_url, rate_limit=None, callback_secret=CALLBACK_SECRET
        )
        bridge_workers = start_workers(values, count=procs, concurrency=threads, workdir=workdir)
        stop.callback(stop_workers, bridge_workers)
        plain_workers = start_workers(plain_values, count=procs, concurrency=threads, workdir=workdir, kind="plain")
        stop.callback(stop_workers, plain_workers)
        sides = [
            Side("bridge", bridge_workers, bridge=BridgeClient(settings_from(values))),
            Side("plain celery", plain_workers, plain=make_app(redis_proc.url, rate_limit=None)),
        ]
        print(f"  A/B, no latency: {rounds} rounds x {count} ops, {procs} procs x {threads} threads each", flush=True)
        ab = alternate(sides, receiver, rounds=rounds, count=count, warmup=50)
        for side in sides:
            costs_per_op(side, receiver, redis_proc, sandbox, count)
            ab["sides"][side.name].update(side.costs)
        sandbox.configure(latency_ms=50)
        print(f"  A/B, 50 ms API latency: {rounds} rounds x {count // 2} ops", flush=True)
        ab50 = alternate(sides, receiver, rounds=rounds, count=count // 2, warmup=20)
        stop_workers(bridge_workers + plain_workers)

        pools = []
        for pool in POOLS:
            pool_values = {**values, "BRIDGE_KEY_PREFIX": f"ov{pool[0]}:"}
            workers = start_workers(pool_values, count=1, concurrency=8, workdir=workdir, pool=pool)
            stop.callback(stop_workers, workers)
            pools.append(Side(f"bridge {pool}", workers, bridge=BridgeClient(settings_from(pool_values))))
        print(f"  pools, 50 ms API latency: {pool_rounds} rounds x {pool_count} ops, 1 proc x 8", flush=True)
        pool_result = alternate(pools, receiver, rounds=pool_rounds, count=pool_count, warmup=50)

    headers = ["side", "median ops/s", "min", "max", "workers RSS MiB", "PSS MiB", "Redis cmds/op"]
    text = print_table(f"Overhead -- no quota, no latency, {procs} procs x {threads} threads", headers, _rows(ab))
    print(f"ratio of medians (bridge / plain celery): {ab['ratio_of_medians']:.2f}")
    text += f"\nratio of medians (bridge / plain celery): {ab['ratio_of_medians']:.2f}"
    for name, side in ab["sides"].items():
        top = ", ".join(f"{cmd} {n:.1f}" for cmd, n in list(side["redis_commands_per_op"].items())[:8])
        print(f"Redis commands per op, {name}: {top}")
        text += f"\nRedis commands per op, {name}: {top}"
    cpu_rows = [[name, *side["cpu_ms_per_op"].values()] for name, side in ab["sides"].items()]
    cpu_headers = ["side", *(f"{who} ms" for who in next(iter(ab["sides"].values()))["cpu_ms_per_op"])]
    text += "\n\n" + print_table("CPU per operation (no latency; one metered round)", cpu_headers, cpu_rows)
    text += "\n\n" + print_table(
        f"Overhead -- 50 ms API latency, {procs} procs x {threads} threads", headers, _rows(ab50)
    )
    print(f"ratio of medians at 50 ms (bridge / plain celery): {ab50['ratio_of_medians']:.2f}")
    text += f"\nratio of medians at 50 ms (bridge / plain celery): {ab50['ratio_of_medians']:.2f}"
    text2 = print_table("Pools -- bridge, 50 ms API latency, 1 proc x 8", headers, _rows(pool_result))
    pool_medians = {name: side["median_ops_per_s"] for name, side in pool_result["sides"].items()}
    pool_ratios = ", ".join(f"{name} {m / pool_medians['bridge threads']:.2f}" for name, m in pool_medians.items())
    print(f"ratio of medians to threads: {pool_ratios}")
    if "gevent" not in POOLS:
        print("gevent: not measured (BENCH_GEVENT=1 and gevent installed to include it)")
    text2 += f"\nratio of medians to threads: {pool_ratios}"
    record = {
        "quick": quick,
        "ab": {**ab, "procs": procs, "threads": threads, "api_latency_ms": 0},
        "ab_latency": {**ab50, "procs": procs, "threads": threads, "api_latency_ms": 50},
        "pools": {**pool_result, "procs": 1, "concurrency": 8, "api_latency_ms": 50, "gevent": "gevent" in POOLS},
        "definition": "ops/s = operations / (last verified callback - first submit); ratio of medians across rounds",
        "tables": [text, text2],
    }
    path = write_result("overhead", record, stamp=stamp)
    print(f"\nwrote {path}")
    return path
