"""``python -m bench ui``: how fast ``/ui`` answers with 100,000 jobs in Redis (the target: under 200 ms).

A private Redis is filled as producers would fill it (``BridgeClient.submit_many``
over the three lanes, plus batches of 1,000), with dead letters and an hour of
per-minute call counts; the ingress serves ``create_app`` with uvicorn in a
thread, and the dashboard is fetched over loopback HTTP (two warm-ups, then
the timed requests). The page reads bounded indexes, so its time should not
grow with the number of jobs: the quick run (10,000 jobs) is there to compare.
"""

from __future__ import annotations

import base64
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from optimum_bridge import BridgeClient
from optimum_bridge.callbacks.deliveries import DeliveryStore
from optimum_bridge.callbacks.sender import dead_letter
from optimum_bridge.devstack import free_port, settings_from, wait_until
from optimum_bridge.ingress.app import create_app
from optimum_bridge.keys import PRIORITIES, Keys

from .common import start_redis
from .report import median, percentile, print_table, utc_stamp, workspace, write_result

KEY = "bench-ui-key-0123456789"
PREFIX = "bench:"
REQUESTS, BATCH_SIZE, BATCHES, LETTERS = 20, 1000, 20, 200
TARGET_MS = 200.0
HOOK = "http://127.0.0.1:9/hook"  # never called: no worker runs


def operation(i: int) -> dict[str, Any]:
    return {  # each its own job in a lane (coalesce: False), as before spec 13
        "method": "GET",
        "coalesce": False,
        "path": f"/Vehicles/AB-{i % 1000:03d}-CD/Trips",
        "query": {"from": "2026-12-01", "to": "2026-12-02"},
        "priority": PRIORITIES[i % 3],
        "metadata": {"tenant": f"t{i % 17}", "note": "<script>x</script>"},
        "callback": {"url": HOOK},
    }


def fill(client: BridgeClient, jobs: int) -> dict[str, float]:
    """``jobs`` jobs in all (some in batches), dead letters and an hour of call counts; the seconds each took."""
    started = time.monotonic()
    in_batches = min(jobs // 5, BATCHES * BATCH_SIZE)
    single = client.submit_many(operation(i) for i in range(jobs - in_batches))
    submitted = time.monotonic() - started
    for start in range(0, in_batches, BATCH_SIZE):
        client.submit_batch([operation(i) for i in range(start, start + BATCH_SIZE)], metadata={"run": start})
    batched = time.monotonic() - started - submitted
    keys, deliveries = Keys(PREFIX), DeliveryStore(client.redis, Keys(PREFIX))
    for job_id in single[:LETTERS]:
        letter = dead_letter(job_id, HOOK, 5, "HTTP 500", failed_at="2026-12-02T00:00Z")
        deliveries.settle(job_id, "", "dead", dead_letter=letter)
    now_minute = int(time.time()) // 60
    with client.redis.pipeline(transaction=False) as pipe:
        for minute in range(now_minute - 60, now_minute + 1):
            pipe.hincrby(keys.calls_per_minute("default", minute // 60), str(minute), 20 + minute % 11)
        pipe.execute()
    return {"submit_s": submitted, "batches_s": batched}


def serve(settings: Any, stop: ExitStack) -> str:
    """The ingress on a free loopback port, in a thread (stopped by ``stop``); its base URL."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="bench-ingress")
    thread.start()

    def stopped() -> None:
        server.should_exit = True
        thread.join(10)

    stop.callback(stopped)
    wait_until(lambda: server.started or not thread.is_alive(), timeout=15, what="the ingress")
    return f"http://127.0.0.1:{port}"


def measure(base: str, *, requests: int = REQUESTS) -> tuple[list[float], int]:
    """``requests`` timed GET /ui (after two warm-ups), in ms; and the page's size."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"bench:{KEY}".encode()).decode()}
    times, size = [], 0
    with httpx.Client(base_url=base, headers=auth, timeout=30, trust_env=False) as http:
        for index in range(requests + 2):
            started = time.perf_counter()
            answer = http.get("/ui")
            elapsed = (time.perf_counter() - started) * 1000
            answer.raise_for_status()
            size = len(answer.content)
            if index >= 2:
                times.append(elapsed)
    return times, size


def run(*, quick: bool) -> Path:
    """Quick: 10,000 jobs. Full: 100,000 jobs."""
    jobs = 10_000 if quick else 100_000
    stamp = utc_stamp()
    with workspace("ui") as workdir, ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        values = {
            "BRIDGE_REDIS_URL": redis_proc.url,
            "BRIDGE_KEY_PREFIX": PREFIX,
            "BRIDGE_API_KEYS": KEY,
            "OPTIMUM_ENVIRONMENT": "sandbox",
            "OPTIMUM_RATE_LIMIT": "30/m",
            "BRIDGE_LOG_LEVEL": "WARNING",
            "BRIDGE_CALLBACK_ALLOW_PRIVATE": "true",
        }
        settings = settings_from(values)
        client = BridgeClient(settings)
        stop.callback(client.close)
        print(f"  writing {jobs:,} jobs ({min(jobs // 5, BATCHES * BATCH_SIZE):,} of them in batches)", flush=True)
        filled = fill(client, jobs)
        keys_in_redis = int(client.redis.dbsize())
        times, size = measure(serve(settings, stop))
    p50, p95 = median(times), percentile(times, 95)
    rows = [[f"{jobs:,}", keys_in_redis, REQUESTS, p50, p95, max(times), size, "yes" if p95 < TARGET_MS else "NO"]]
    headers = ["jobs", "Redis keys", "requests", "median ms", "p95 ms", "max ms", "page bytes", f"p95 < {TARGET_MS:g}"]
    table = print_table("GET /ui over loopback HTTP (uvicorn in a thread), 2 warm-ups", headers, rows)
    record = {
        "quick": quick,
        "jobs": jobs,
        "redis_keys": keys_in_redis,
        "fill": filled,
        "requests_ms": [round(t, 2) for t in times],
        "median_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "page_bytes": size,
        "target_ms": TARGET_MS,
        "table": table,
    }
    path = write_result("ui", record, stamp=stamp)
    print(f"written to {path}")
    return path
