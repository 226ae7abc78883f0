"""``python -m bench onboarding``: accounts created at runtime (spec §12a), at scale.

A private Redis, the sandbox in its own process, two bridge workers (``-c 4``,
threads) and the ingress (uvicorn in a thread), all with ``BRIDGE_SECRETS_KEY``.

1. **Onboarding**: with ``PRESENT`` accounts already created at runtime, each
   probe ``POST /v1/accounts`` a new one, then ``POST /v1/operations`` for it at
   once, and takes the time from the account's POST to its first call's start
   (the job's ``started_at``): p50 and p95. Spec: every worker serves a new
   account within 2 s.
2. **Redis per idle account**: accounts created up to ``IDLE`` in all (through
   ``accounts.store``, as the CLI does), the workers left to follow them, then
   ``INFO memory`` ``used_memory`` before and after, divided by the number
   created, beside the ``MEMORY USAGE`` of one account's hash. Spec: at most
   2 KB an account.
3. **Idle commands**: with the ``IDLE`` accounts and nothing queued, Redis's own
   command counters over a window, per worker. Spec §10a: at most 20 a second.
4. **/ui**: ``GET /ui`` with ``IDLE`` accounts (two warm-ups, then the timed
   requests). Spec: under 200 ms.

All the accounts share the sandbox's one client (the sandbox checks credentials,
not names). ``--quick``: 200 present, 2,000 idle, 10 probes.
"""

from __future__ import annotations

import base64
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import redis
from cryptography.fernet import Fernet
from pydantic import SecretStr

from optimum_bridge import BridgeClient
from optimum_bridge.accounts.cipher import SecretsCipher
from optimum_bridge.accounts.model import NewAccount
from optimum_bridge.accounts.store import AccountStore
from optimum_bridge.config.environments import SANDBOX_CREDENTIALS
from optimum_bridge.devstack import settings_from, stop_workers, wait_until
from optimum_bridge.keys import Keys

from .common import SandboxProc, bridge_settings, start_redis, start_sandbox, start_workers
from .report import median, percentile, print_table, utc_stamp, workspace, write_result
from .ui import serve

ADMIN = "bench-onboarding-admin-key-0123456789"
KEY = "bench-onboarding-key-0123456789"
PREFIX = "bench:"
CLIENT_ID, SECRET = SANDBOX_CREDENTIALS
WORKERS, CONCURRENCY = 2, 4
WINDOW_S = 10.0
UI_REQUESTS = 20
TARGETS = {"first_call_p95_s": 2.0, "bytes_per_account": 2048, "idle_commands_per_worker_s": 20.0, "ui_p95_ms": 200.0}


def account(name: str, sandbox: SandboxProc) -> dict[str, Any]:
    """The body of ``POST /v1/accounts`` for an account on the sandbox."""
    return {
        "name": name,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "environment": "sandbox",
        "api_url": sandbox.url,
        "token_url": sandbox.token_url,
        "rate_limit": "30/m",
    }


def create_many(store: AccountStore, sandbox: SandboxProc, names: list[str]) -> float:
    """Create ``names`` through the store (as the CLI does); the seconds it took."""
    started = time.monotonic()
    for name in names:
        store.create(NewAccount.model_validate(account(name, sandbox)))
    return time.monotonic() - started


def onboard(http: httpx.Client, client: BridgeClient, sandbox: SandboxProc, name: str) -> float:
    """POST the account, submit one job for it at once; seconds from the POST to the call's start."""
    posted = time.time()
    answer = http.post("/v1/accounts", json=account(name, sandbox), headers={"Authorization": f"Bearer {ADMIN}"})
    answer.raise_for_status()
    job = client.submit({"method": "GET", "path": "/Vehicles", "account": name})
    status = client.wait(job, timeout=60)
    if status.status != "succeeded" or status.started_at is None:
        raise RuntimeError(f"onboarding probe {name}: job {job} ended {status.status}")
    return status.started_at.timestamp() - posted


def commands(client: redis.Redis) -> dict[str, int]:
    """Every command Redis has run, by name (``INFO commandstats``; commands inside Lua included)."""
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def ui_times(base: str, *, requests: int = UI_REQUESTS) -> list[float]:
    """Timed ``GET /ui`` (after two warm-ups), in ms."""
    auth = {"Authorization": "Basic " + base64.b64encode(f"bench:{ADMIN}".encode()).decode()}
    times = []
    with httpx.Client(base_url=base, headers=auth, timeout=30, trust_env=False) as http:
        for index in range(requests + 2):
            started = time.perf_counter()
            http.get("/ui").raise_for_status()
            if index >= 2:
                times.append((time.perf_counter() - started) * 1000)
    return times


def run(*, quick: bool) -> Path:
    """Quick: 200 accounts present, 2,000 idle, 10 probes. Full: 1,000, 10,000, 30."""
    present, idle, probes = (200, 2_000, 10) if quick else (1_000, 10_000, 30)
    stamp = utc_stamp()
    secrets_key = Fernet.generate_key().decode()
    with workspace("onboarding") as workdir, ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir, quota=None)
        stop.callback(sandbox.stop)
        values = bridge_settings(
            redis_proc.url,
            sandbox,
            BRIDGE_KEY_PREFIX=PREFIX,
            BRIDGE_SECRETS_KEY=secrets_key,
            BRIDGE_ADMIN_KEYS=ADMIN,
            BRIDGE_API_KEYS=KEY,
            BRIDGE_VALIDATE_OPERATIONS="off",
        )
        settings = settings_from(values)
        client = BridgeClient(settings)
        stop.callback(client.close)
        keys = Keys(PREFIX)
        store = AccountStore(
            client.redis,
            keys,
            file=settings.accounts,
            cipher=SecretsCipher(SecretStr(secrets_key)),
            sandbox_url=sandbox.url,
        )
        print(f"  creating {present:,} accounts, then {WORKERS} workers and the ingress", flush=True)
        create_many(store, sandbox, [f"present-{i:05d}" for i in range(present)])
        workers = start_workers(values, count=WORKERS, concurrency=CONCURRENCY, workdir=workdir)
        stop.callback(lambda: stop_workers(workers))
        base = serve(settings, stop)
        http = httpx.Client(base_url=base, timeout=60, trust_env=False)
        stop.callback(http.close)
        print(f"  {probes} onboarding probes with {present:,} accounts present", flush=True)
        firsts = [onboard(http, client, sandbox, f"probe-{i:03d}") for i in range(probes)]

        rest = idle - present - probes
        before = int(client.redis.info("memory")["used_memory"])
        print(f"  creating {rest:,} more accounts ({idle:,} in all)", flush=True)
        created_s = create_many(store, sandbox, [f"idle-{i:05d}" for i in range(rest)])
        quotas = keys.quotas
        wait_until(lambda: client.redis.hlen(quotas) >= idle, timeout=120, what="the workers to follow every account")
        time.sleep(3)  # the workers' follow-up (quotas published, ready set checked) settles
        after = int(client.redis.info("memory")["used_memory"])
        per_account = (after - before) / rest
        one_hash = int(client.redis.memory_usage(keys.account("idle-00000")) or 0)

        start_calls, started = commands(client.redis), time.monotonic()
        time.sleep(WINDOW_S)  # the measuring window: nothing queued, Redis counts what the workers do
        elapsed = time.monotonic() - started
        end_calls = commands(client.redis)
        by_command = {
            name: round((calls - start_calls.get(name, 0) - (name == "info")) / elapsed / WORKERS, 2)
            for name, calls in end_calls.items()
        }
        by_command = {name: rate for name, rate in sorted(by_command.items(), key=lambda kv: -kv[1]) if rate > 0}
        idle_rate = sum(by_command.values())
        print(f"  idle, per worker: {idle_rate:.1f} commands/s {by_command}", flush=True)

        times = ui_times(base)
    first_p50, first_p95 = median(firsts), percentile(firsts, 95)
    ui_p50, ui_p95 = median(times), percentile(times, 95)
    figures = {
        "first_call_p50_s": round(first_p50, 3),
        "first_call_p95_s": round(first_p95, 3),
        "bytes_per_account": round(per_account),
        "account_hash_bytes": one_hash,
        "idle_commands_per_worker_s": round(idle_rate, 2),
        "ui_p50_ms": round(ui_p50, 2),
        "ui_p95_ms": round(ui_p95, 2),
    }
    rows = [
        [f"POST /v1/accounts -> first call, {present:,} present", f"p50 {first_p50:.3f} s, p95 {first_p95:.3f} s",
         "p95 <= 2 s", "yes" if first_p95 <= TARGETS["first_call_p95_s"] else "NO"],
        [f"Redis per idle account, {idle:,} accounts", f"{per_account:.0f} B (hash alone {one_hash} B)",
         "<= 2048 B", "yes" if per_account <= TARGETS["bytes_per_account"] else "NO"],
        [f"idle Redis commands per worker, {idle:,} accounts", f"{idle_rate:.1f}/s",
         "<= 20/s", "yes" if idle_rate <= TARGETS["idle_commands_per_worker_s"] else "NO"],
        [f"GET /ui, {idle:,} accounts", f"p50 {ui_p50:.1f} ms, p95 {ui_p95:.1f} ms",
         "p95 < 200 ms", "yes" if ui_p95 < TARGETS["ui_p95_ms"] else "NO"],
    ]  # fmt: skip
    table = print_table("accounts created at runtime (spec 12a)", ["measure", "figure", "goal", "met"], rows)
    record = {
        "quick": quick,
        "present": present,
        "idle_accounts": idle,
        "probes": probes,
        "workers": WORKERS,
        "concurrency": CONCURRENCY,
        "first_calls_s": [round(t, 3) for t in firsts],
        "created_per_s": round(rest / created_s, 1) if created_s else None,
        "ui_requests_ms": [round(t, 2) for t in times],
        "idle_commands_per_worker_by_name": by_command,
        **figures,
        "targets": TARGETS,
        "table": table,
    }
    path = write_result("onboarding", record, stamp=stamp)
    print(f"written to {path}")
    return path
