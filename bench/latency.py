"""Benchmark 3 -- latency at low load: submit to verified callback, and where the time goes.

One operation every 200 ms (``BridgeClient.submit``, one ``GET /Vehicles/{plate}``
with a callback), one worker process x 4 threads, quota 10/s in the sandbox
and the bridge (so the limiter never has to wait: it only costs its Redis
call), no API latency. Two passes over the same load:

1. plain worker (``optimum-bridge worker``): end-to-end p50/p95/p99, split
   from outside with the timestamps the system already keeps -- submit (bench),
   arrival at the API (sandbox log, ``time.monotonic``), ``finished_at`` (job
   hash, wall clock mapped to monotonic), callback arrival (receiver);
2. instrumented worker (``bench.instrument``: Celery task signals plus timers
   wrapped around the worker's ``tokens.get``, ``jobs.mark_sent``, API
   ``httpx`` request and ``jobs.store.JobStore.complete``): the full breakdown -- broker,
   token, limiter, API call, bridge bookkeeping, callback queue, callback
   delivery -- per operation, which sums to the end-to-end time.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import CallbackReceiver, RedisServer, settings_from, stop_workers
from optimum_bridge.keys import text
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import SandboxProc, WorkerKind, bridge_settings, start_workers
from .instrument import KEY
from .receiver import start_services
from .report import (
    median,
    percentile,
    print_table,
    utc_stamp,
    workspace,
    write_result,
)

PLATES = generate_fleet(42, 60).plates()
QUOTA = "10/s"
INTERVAL_S = 0.2
SEGMENTS = [
    ("submit call", "submit call (Lua, one round trip)"),
    ("broker", "queue wait + Celery dispatch -> execute task starts"),
    ("token", "tokens.get (Redis HGETALL)"),
    ("limiter", "jobs.mark_sent (the call-sent record, its slot re-checked in Lua)"),
    ("api", "API call (httpx request to the sandbox)"),
    ("bookkeeping", "claim, mark_sent, metrics, parse, complete (rest of the execute task)"),
    ("callback queue", "complete() -> callback task starts"),
    ("callback", "build, sign and POST the callback -> receiver reads it"),
]


@dataclass
class Sample:
    job_id: str
    submit: float
    submitted: float
    arrival: float = 0.0


def _clock_offset() -> float:
    """wall - monotonic (the same for every process on this machine)."""
    return time.time() - time.monotonic()


def drive(client: BridgeClient, receiver: CallbackReceiver, *, count: int, interval: float) -> list[Sample]:
    """Submit one operation every ``interval`` s; wait for all callbacks."""
    samples = []
    start = time.monotonic()
    for i in range(count):
        op = {
            "method": "GET",
            "path": f"/Vehicles/{PLATES[i % len(PLATES)]}",
            "coalesce": False,
            "callback": {"url": receiver.url},
        }
        before = time.monotonic()
        job_id = client.submit(op)
        samples.append(Sample(job_id, before, time.monotonic()))
        time.sleep(max(0.0, start + (i + 1) * interval - time.monotonic()))
    arrivals = receiver.wait_for([s.job_id for s in samples], timeout=60)
    for sample in samples:
        sample.arrival = arrivals[sample.job_id]
    return samples


def external(samples: list[Sample], client: BridgeClient, sandbox: SandboxProc) -> dict[str, list[float]]:
    """Segments from timestamps the system keeps anyway (no instrumentation)."""
    offset = _clock_offset()
    api = sorted(e["t"] for e in sandbox.stats()["log"] if e["accepted"])
    names = ("submit -> API arrival", "API arrival -> finished_at", "finished_at -> callback")
    out: dict[str, list[float]] = {name: [] for name in names}
    for sample in samples:
        status = client.get(sample.job_id)
        if status.finished_at is None:
            continue
        finished = status.finished_at.timestamp() - offset
        hits = [t for t in api if sample.submit <= t <= finished]
        if len(hits) != 1:
            continue  # overlapping operations: cannot attribute the arrival
        out["submit -> API arrival"].append(hits[0] - sample.submit)
        out["API arrival -> finished_at"].append(finished - hits[0])
        out["finished_at -> callback"].append(sample.arrival - finished)
    return out


def instrumented(samples: list[Sample], redis_proc: RedisServer) -> dict[str, list[float]]:
    """The full breakdown from ``bench.instrument``'s timers (all ``time.monotonic``)."""
    client = redis_proc.client()
    out: dict[str, list[float]] = {name: [] for name, _ in SEGMENTS}
    for sample in samples:
        raw = {text(k): float(v) for k, v in client.hgetall(KEY + sample.job_id).items()}
        if "exec_complete_end" not in raw or "cb_start" not in raw:
            continue
        token, limiter, api = raw.get("exec_token_s", 0.0), raw.get("exec_sent_s", 0.0), raw.get("exec_api_s", 0.0)
        values = {
            "submit call": sample.submitted - sample.submit,
            "broker": raw["exec_start"] - sample.submitted,
            "token": token,
            "limiter": limiter,
            "api": api,
            "bookkeeping": raw["exec_complete_end"] - raw["exec_start"] - token - limiter - api,
            "callback queue": raw["cb_start"] - raw["exec_complete_end"],
            "callback": sample.arrival - raw["cb_start"],
        }
        for name, value in values.items():
            out[name].append(value)
    return out


def phase(
    redis_proc: RedisServer,
    sandbox: SandboxProc,
    receiver: CallbackReceiver,
    workdir: Path,
    *,
    kind: WorkerKind,
    count: int,
) -> dict[str, Any]:
    redis_proc.flush()
    sandbox.reset()
    receiver.clear()
    values = bridge_settings(
        redis_proc.url, sandbox, OPTIMUM_RATE_LIMIT=QUOTA, BRIDGE_RATE_LIMIT_MARGIN_S="0.15", BRIDGE_KEY_PREFIX="lat:"
    )
    workers = start_workers(values, count=1, concurrency=4, workdir=workdir, kind=kind)
    try:
        client = BridgeClient(settings_from(values))
        drive(client, receiver, count=5, interval=INTERVAL_S)  # warm-up: token, connections, imports
        samples = drive(client, receiver, count=count, interval=INTERVAL_S)
        totals = [s.arrival - s.submit for s in samples]
        parts = instrumented(samples, redis_proc) if kind == "instrumented" else external(samples, client, sandbox)
    finally:
        stop_workers(workers)
    return {
        "kind": kind,
        "count": count,
        "total_ms": {q: percentile(totals, q) * 1000 for q in (50, 95, 99)},
        "mean_total_ms": sum(totals) / len(totals) * 1000,
        "segments": {
            name: {
                "p50_ms": median(v) * 1000,
                "p95_ms": percentile(v, 95) * 1000,
                "mean_ms": sum(v) / len(v) * 1000 if v else float("nan"),
                "n": len(v),
            }
            for name, v in parts.items()
        },
        "raw_total_s": [round(t, 5) for t in totals],
    }


def show(passes: list[dict[str, Any]]) -> list[str]:
    headers = ["pass", "ops", "p50 ms", "p95 ms", "p99 ms", "mean ms"]
    rows = [[p["kind"], p["count"], *p["total_ms"].values(), p["mean_total_ms"]] for p in passes]
    texts = [print_table(f"Latency -- submit to verified callback, 1 op / {INTERVAL_S * 1000:.0f} ms", headers, rows)]
    for p in passes:
        mean_total = p["mean_total_ms"]
        rows = [
            [name, seg["p50_ms"], seg["p95_ms"], seg["mean_ms"], f"{seg['mean_ms'] / mean_total:.1%}"]
            for name, seg in p["segments"].items()
        ]
        method = "instrumented worker (timers)" if p["kind"] == "instrumented" else "timestamps kept by the system"
        title = f"Breakdown ({method}); share = mean segment / mean total"
        texts.append(print_table(title, ["segment", "p50 ms", "p95 ms", "mean ms", "share"], rows))
    return texts


def run(*, quick: bool) -> Path:
    """Quick: 30 operations per pass. Full: 100."""
    count = 30 if quick else 100
    stamp = utc_stamp()
    passes = []
    with workspace("latency") as workdir, ExitStack() as stop:
        redis_proc, sandbox, receiver = start_services(stop, workdir, quota=QUOTA)
        for kind in ("bridge", "instrumented"):
            print(f"  {kind} worker: {count} ops, one every {INTERVAL_S}s", flush=True)
            passes.append(phase(redis_proc, sandbox, receiver, workdir, kind=kind, count=count))
    texts = show(passes)
    record = {
        "quick": quick,
        "setup": f"1 worker x 4 threads, quota {QUOTA} (sandbox and bridge, margin 0.15 s), API latency 0 ms",
        "segments": dict(SEGMENTS),
        "method": {
            "bridge": "end to end from the bench; split with the sandbox log (arrival), the job hash "
            "(finished_at, wall clock mapped to monotonic) and the receiver",
            "instrumented": "bench.instrument: Celery task_prerun/postrun + timers wrapped around the worker's "
            "tokens.get, jobs.mark_sent, API httpx request and jobs.complete (instance attributes)",
        },
        "passes": passes,
        "tables": texts,
    }
    path = write_result("latency", record, stamp=stamp)
    print(f"\nwrote {path}")
    return path
