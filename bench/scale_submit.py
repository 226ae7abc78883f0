"""Phases 1 and 2 of ``bench.scale``: submitting many operations, through Python and through HTTP.

``operations`` builds the realistic operations every phase submits;
``submit_python`` times ``submit_many`` and Redis's memory per queued
operation, ``submit_stages`` where a submit's time goes, ``submit_http`` the
ingress's ``POST /v1/operations:batch``. ``bench.scale``'s docstring defines
every figure.
"""

from __future__ import annotations

import importlib
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import CallbackReceiver, RedisServer, free_port, settings_from, wait_until
from optimum_bridge.devstack.processes import stop_process, tail
from optimum_bridge.keys import OPERATIONS_QUEUE, Keys
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import SandboxProc, child_env, spawn

PLATES = generate_fleet(42, 60).plates()
API_KEY = "bench-api-key"
INGRESS = (
    "import sys, uvicorn; from optimum_bridge.ingress import create_app; "
    "from optimum_bridge.settings import load_settings; "
    "uvicorn.run(create_app(load_settings()), host='127.0.0.1', port=int(sys.argv[1]), "
    "log_level='warning', access_log=False)"
)


def operations(count: int, callback: str, *, idempotent: bool = False, start: int = 0) -> list[dict[str, Any]]:
    """Realistic operations: one vehicle-day of trips each, with a callback and metadata."""
    ops = []
    for i in range(start, start + count):
        op: dict[str, Any] = {  # each makes its own call (coalesce: False), as before spec 13
            "method": "GET",
            "coalesce": False,
            "path": "/Geolocation/Trips",
            "query": {
                "registrationNumber": PLATES[i % len(PLATES)],
                "startDate": "2026-11-26T00:00:00",
                "endDate": "2026-11-27T00:00:00",
            },
            "callback": {"url": callback},
            "metadata": {"batch": "nightly-2026-11-26", "row": i},
        }
        if idempotent:
            op["idempotency_key"] = f"trips-{PLATES[i % len(PLATES)]}-2026-11-26-{i}"
        ops.append(op)
    return ops


@dataclass
class Stack:
    redis: RedisServer
    sandbox: SandboxProc
    receiver: CallbackReceiver
    workdir: Path
    values: dict[str, str]


def submit_python(stack: Stack, count: int, *, idempotent: bool = False, listpack: bool = False) -> dict[str, Any]:
    """Time ``submit_many`` of ``count`` operations into an empty Redis; bytes per queued op.

    ``listpack``: the same with Redis ``hash-max-listpack-value 1024`` (default 64), an
    operator setting under which a job hash, whose ``op`` field is ~270 bytes, stays compact.
    """
    stack.redis.flush()
    redis_client = stack.redis.client()
    if listpack:
        redis_client.config_set("hash-max-listpack-value", 1024)
    client = BridgeClient(settings_from(stack.values))
    ops = operations(count, stack.receiver.url, idempotent=idempotent)
    before = stack.redis.used_memory()
    started = time.perf_counter()
    ids = client.submit_many(ops)
    elapsed = time.perf_counter() - started
    after = stack.redis.used_memory()
    keys = Keys(client.settings.key_prefix)
    lane = keys.lane("normal")
    job_bytes = redis_client.memory_usage(keys.job(ids[0]))
    redis_client.config_set("hash-max-listpack-value", 64)
    suffix = " + idempotency_key" if idempotent else ""
    suffix += " (redis hash-max-listpack-value 1024)" if listpack else ""
    return {
        "path": "python submit_many" + suffix,
        "count": len(ids),
        "seconds": elapsed,
        "ops_per_s": count / elapsed,
        "bytes_per_op": (after - before) / count,
        "job_hash_bytes": job_bytes,
        "lane_bytes_per_op": (redis_client.memory_usage(lane, samples=0) or 0) / count,
        "queued_messages": int(redis_client.llen(keys.queue(OPERATIONS_QUEUE))),  # 0: built at dispatch
    }


def submit_stages(stack: Stack, count: int = 20_000) -> dict[str, float]:
    """Microseconds per operation of each stage of ``submit_many``, timed separately.

    A profiler would mislead here (cProfile's per-call cost inflates the many small
    calls of Celery's message building), so the stages are timed on their own:
    validation (``client.validate``), building the job JSON (``model_dump_json``; the
    Celery message is no longer built at submit), and the rest of a submit of
    already-validated models (Lua argument packing, the round trip, Redis's work).
    """
    client = BridgeClient(settings_from(stack.values))
    ops = operations(count, stack.receiver.url)
    stack.redis.flush()
    started = time.perf_counter()
    client.submit_many(ops)
    full = time.perf_counter() - started
    started = time.perf_counter()
    models = [client.validate(op) for op in ops]
    validate = time.perf_counter() - started
    started = time.perf_counter()
    for model in models:
        model.model_dump_json(exclude_defaults=True)
        uuid.uuid4().hex  # noqa: B018 - the job id, as submit makes one
    build = time.perf_counter() - started
    stack.redis.flush()
    started = time.perf_counter()
    client.submit_many(models)
    prevalidated = time.perf_counter() - started
    stack.redis.flush()
    per_op = 1e6 / count
    return {
        "count": count,
        "full_us": full * per_op,
        "validate_us": validate * per_op,
        "build_us": build * per_op,
        "lua_us": (prevalidated - build) * per_op,
    }


def submit_http(stack: Stack, count: int) -> dict[str, Any]:
    """``POST /v1/operations:batch`` of 1,000 until ``count``, one client, ingress in a subprocess."""
    try:
        importlib.import_module("optimum_bridge.ingress").create_app  # noqa: B018
    except (ImportError, AttributeError) as exc:
        return {"path": "http batch", "skipped": f"optimum_bridge.ingress.create_app not importable: {exc}"}
    stack.redis.flush()
    port = free_port()
    env = child_env({**stack.values, "BRIDGE_API_KEYS": API_KEY})
    log_path = stack.workdir / "ingress.log"
    process = spawn([sys.executable, "-c", INGRESS, str(port)], env=env, cwd=stack.workdir, log_path=log_path)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=120, trust_env=False, headers={"Authorization": f"Bearer {API_KEY}"}) as http:

            def up() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"ingress exited:\n{tail(log_path)}")
                try:
                    return http.get(base + "/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, timeout=60, what="the ingress")
            batches = [operations(1000, stack.receiver.url, start=i) for i in range(0, count, 1000)]
            before = stack.redis.used_memory()
            started = time.perf_counter()
            for batch in batches:
                answer = http.post(base + "/v1/operations:batch", json={"operations": batch})
                if answer.status_code != 202:
                    raise RuntimeError(f"batch refused: {answer.status_code} {answer.text[:300]}")
            elapsed = time.perf_counter() - started
            after = stack.redis.used_memory()
    finally:
        stop_process(process, grace_s=10)
    return {
        "path": "http POST /v1/operations:batch",
        "count": count,
        "seconds": elapsed,
        "ops_per_s": count / elapsed,
        "bytes_per_op": (after - before) / count,
    }
