"""Benchmark -- failover: what a Redis failover costs the bridge, and what ``WAIT`` costs each operation.

Failover (``devstack.failover``, the scenario of ``tests/faults/test_failover.py``):
one primary, two replicas and three sentinels on loopback (down-after 1 s), two
worker processes x 8 threads, the ingress as a process and ``BridgeClient``
submitting distinct operations (steadily over 24 s, each with its idempotency key, resubmitted
on any refusal) against the sandbox at 200/s; the primary is SIGKILLed after a
quarter of the submissions, and (the old primary back as a replica) the new one
after half. Figures, for ``BRIDGE_REDIS_MIN_REPLICAS`` 0 and 1: time from each
kill to the promotion and to the first call after it, submissions refused,
acknowledged jobs lost or not final, operations called twice, callbacks missing
or duplicated.

WAIT: a primary and one replica; one ``BridgeClient`` submits one operation per
call, then batches of 100, with ``BRIDGE_REDIS_MIN_REPLICAS`` 0 (the baseline,
same run) and 1; the median and p99 time per operation, and the difference.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import CallbackReceiver, RedisServer, settings_from, start_redis
from optimum_bridge.devstack.failover import run_failover
from optimum_bridge.devstack.sentinel import start_sentinel_group
from optimum_bridge.devstack.waiting import wait_until
from optimum_bridge.sandbox import SandboxConfig, SandboxServer
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import CALLBACK_SECRET, bridge_settings
from .report import median, percentile, print_table, utc_stamp, workspace, write_result


def failover_run(workdir: Path, *, min_replicas: int, operations: int) -> dict[str, Any]:
    """One run of the failover scenario on a fresh group and sandbox; its figures."""
    plates = generate_fleet(7, operations).plates()
    with ExitStack() as stop:
        group = start_sentinel_group()
        stop.callback(group.stop)
        sandbox = SandboxServer(SandboxConfig(quota=None, seed=7, fleet_size=operations), host="127.0.0.1", port=0)
        sandbox.start()
        stop.callback(sandbox.stop)
        receiver = stop.enter_context(CallbackReceiver(CALLBACK_SECRET))
        env = bridge_settings(
            group.url,
            sandbox,  # type: ignore[arg-type]  # url and token_url are all it reads
            BRIDGE_KEY_PREFIX="fo:",
            OPTIMUM_RATE_LIMIT="200/s",
            BRIDGE_RATE_BURST="20",
            BRIDGE_REDELIVERY_TIMEOUT_S="30",  # a running job's lease (15 s) outlives a failover
            BRIDGE_RETRY_BASE_S="0.2",
            BRIDGE_CALLBACK_SCHEDULE_S="0.2,0.5,1,2",
            BRIDGE_REDIS_MIN_REPLICAS=str(min_replicas),
            BRIDGE_LOG_LEVEL="INFO",  # the workers' "ready." line, and their logs when a run fails
        )
        run_dir = workdir / f"n{min_replicas}"
        run_dir.mkdir()
        report = run_failover(
            group, env, run_dir, sandbox_stats=sandbox.stats, receiver=receiver, plates=plates, operations=operations
        )
    return report.figures()


def _timed(client: BridgeClient, batches: list[list[dict[str, Any]]]) -> list[float]:
    """Seconds per operation of each ``submit_many``."""
    per_op = []
    for batch in batches:
        started = time.perf_counter()
        client.submit_many(batch)
        per_op.append((time.perf_counter() - started) / len(batch))
    return per_op


def _op(key: str) -> dict[str, Any]:
    return {"method": "GET", "path": f"/Vehicles/{key}", "idempotency_key": key}


def wait_cost(workdir: Path, *, count: int) -> list[dict[str, Any]]:
    """Submission time per operation with and without ``WAIT 1``, one by one and in batches of 100."""
    primary = start_redis("--dir", str(workdir))
    replica: RedisServer | None = None
    try:
        replica = start_redis("--replicaof", "127.0.0.1", str(primary.port))
        wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", timeout=20)
        sandbox = SandboxServer(SandboxConfig(quota=None), host="127.0.0.1", port=0)
        rows = []
        for shape, size in (("one by one", 1), ("batches of 100", 100)):
            for n in (0, 1):
                env = bridge_settings(
                    primary.url,
                    sandbox,  # type: ignore[arg-type]  # url and token_url are all it reads
                    BRIDGE_KEY_PREFIX=f"w{n}{size}:",
                    BRIDGE_REDIS_MIN_REPLICAS=str(n),
                )
                ops = [_op(f"{n}-{size}-{i}") for i in range(count)]
                batches = [ops[i : i + size] for i in range(0, count, size)]
                with BridgeClient(settings_from(env)) as client:
                    _timed(client, batches[: max(1, len(batches) // 10)])  # warm: scripts loaded, connections open
                    times = _timed(client, batches)
                rows.append(
                    {
                        "shape": shape,
                        "min_replicas": n,
                        "median_ms": median(times) * 1000,
                        "p99_ms": percentile(times, 99) * 1000,
                        "operations": count,
                    }
                )
        return rows
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


def acknowledged_then_lost(*, min_replicas: int, writers: int = 4) -> dict[str, Any]:
    """Plain Redis, no bridge: writers ``INCR`` their own counters as fast as they can on the primary
    (with ``WAIT 1`` after each when ``min_replicas``), the primary is SIGKILLed, and what each writer
    was told it had written is compared with what the promoted replica has: the writes a failover loses.

    On loopback this is zero even at N = 0: what Redis wrote to the replica's socket before dying,
    the kernel still delivers (and a SIGSTOPped replica's kernel still receives it). Losing writes
    takes a network that holds them, or a host that dies with its kernel; this harness has neither.
    """
    group = start_sentinel_group(replicas=1)
    try:
        primary = group.primary()
        acknowledged = [0] * writers
        stop = threading.Event()

        def write(index: int) -> None:
            client = primary.client(retry=Retry(NoBackoff(), 0), socket_timeout=5)
            key = f"counter:{index}"
            try:
                while not stop.is_set():
                    if min_replicas:
                        pipe = client.pipeline(transaction=False)
                        pipe.incr(key)
                        pipe.wait(min_replicas, 1000)
                        value, replicas = pipe.execute()
                        if replicas >= min_replicas:
                            acknowledged[index] = value
                    else:
                        acknowledged[index] = client.incr(key)
            except (redis.RedisError, OSError):
                return  # the primary is gone

        threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(writers)]
        for thread in threads:
            thread.start()
        wait_until(lambda: min(acknowledged) > 1000, timeout=30, what="writes under way")
        old = group.kill_primary()
        stop.set()
        new = group.wait_promoted(old.port)
        for thread in threads:
            thread.join(10)
        kept = [int(group.data_client(new).get(f"counter:{i}") or 0) for i in range(writers)]
        return {
            "min_replicas": min_replicas,
            "acknowledged": sum(acknowledged),
            "lost": sum(max(0, a - k) for a, k in zip(acknowledged, kept, strict=True)),
        }
    finally:
        group.stop()


def run(*, quick: bool) -> Path:
    """Quick: 300 operations per failover run, 1,000 WAIT samples. Full: 1,000 and 5,000."""
    operations, samples = (300, 1000) if quick else (1000, 5000)
    stamp = utc_stamp()
    with workspace("failover") as workdir:
        print(f"  WAIT: {samples} submissions one by one and in batches of 100, N = 0 and 1", flush=True)
        costs = wait_cost(workdir, count=samples)
        print("  plain Redis: acknowledged writes a SIGKILLed primary takes with it, N = 0 and 1", flush=True)
        raw = [acknowledged_then_lost(min_replicas=n) for n in (0, 1) for _ in range(3)]
        runs = []
        for n in (0, 1):
            print(f"  failover: {operations} operations, 2 kills, BRIDGE_REDIS_MIN_REPLICAS={n}", flush=True)
            runs.append(failover_run(workdir, min_replicas=n, operations=operations))
    base = {(r["shape"], r["min_replicas"]): r for r in costs}
    print_table(
        "WAIT -- submission time per operation (primary + 1 replica on loopback)",
        ["shape", "N", "median ms", "p99 ms", "WAIT adds (median) ms"],
        [
            [
                r["shape"],
                r["min_replicas"],
                r["median_ms"],
                r["p99_ms"],
                r["median_ms"] - base[(r["shape"], 0)]["median_ms"],
            ]
            for r in costs
        ],
        digits=3,
    )
    print_table(
        f"Failover -- {operations} operations, the primary SIGKILLed twice",
        [
            "N",
            "kill",
            "promoted after s",
            "first call after s",
            "refused",
            "lost",
            "not final",
            "called twice",
            "callbacks missing",
            "callbacks twice",
        ],
        [
            [
                r["min_replicas"],
                i + 1,
                k["promoted_after_s"],
                k["first_call_after_s"],
                r["submissions_refused"],
                r["lost"],
                r["not_final"],
                r["called_twice"],
                r["callbacks_missing"],
                r["callbacks_duplicated"],
            ]
            for r in runs
            for i, k in enumerate(r["kills"])
        ],
    )
    print_table(
        "Plain Redis -- acknowledged writes lost when the primary is SIGKILLed (4 writers, INCR)",
        ["N", "acknowledged", "lost"],
        [[r["min_replicas"], r["acknowledged"], r["lost"]] for r in raw],
    )
    record = {"quick": quick, "wait_cost": costs, "failover": runs, "plain_redis_loss": raw}
    path = write_result("failover", record, stamp=stamp)
    print(f"\nresults: {path}")
    return path
