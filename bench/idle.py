"""Benchmark -- idle: what a worker costs with nothing queued, by the number of accounts (spec §10a).

For each count of accounts (an accounts file of N accounts at 30/m), a private
Redis and one bridge worker (``-c 4``, threads) with nothing queued: after the
worker consumes and has published its accounts' quotas, a warm-up, then a
window in which Redis's own counters (``INFO commandstats``, commands inside
Lua scripts included) give the commands per second, and ``psutil`` the CPU of
the worker process and of Redis. Beside it, in the same run, the design it
replaced (one dispatcher per account polled every 50 ms, one OpenAPI timer per
account: commit ``OLD_COMMIT``, extracted with ``git archive``) at the counts
it can carry. Goal: at most 20 commands a second per worker, whatever N.
Then, for this tree, the dispatch latency: submission -> call start
(``started_at``) of jobs submitted one at a time to idle accounts spread over
the N (each warmed by one call, for its token); goal p50 <= 10 ms.
"""

from __future__ import annotations

import contextlib
import functools
import textwrap
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from optimum_bridge import BridgeClient
from optimum_bridge.config.environments import SANDBOX_CREDENTIALS
from optimum_bridge.devstack import RedisServer, settings_from, stop_workers, wait_until

from .common import SandboxProc, bridge_settings, extract_old, start_redis, start_sandbox, start_workers
from .report import percentile, print_table, utc_stamp, workspace, write_result

#: The polling design (main before issue 17): one dispatcher per account every 50 ms.
OLD_COMMIT = "49d2b53"
SECRET = SANDBOX_CREDENTIALS[1]
#: Probes of the dispatch latency: jobs submitted one at a time to idle accounts (each warmed with one call).
PROBES = 30
PROBES_FEW = 10  # at least this many probes, when there are fewer accounts than PROBES
SLOT_S = 2.1  # the slot interval at 30/m (60.25 s / 30), and a little more
#: Seconds between a worker's start and the window: past its start (quotas published; for the
#: polling design, its OpenAPI timers' first fetches, one per account), into the steady idle state.
WARMUP_S = 12.0


@dataclass(frozen=True)
class Design:
    name: str
    pythonpath: str | None  # None: this tree


def accounts_file(directory: Path, sandbox: SandboxProc, count: int) -> Path:
    """``count`` accounts on the sandbox, 30/m each, one shared secret variable."""
    path = directory / f"accounts-{count}.toml"
    block = textwrap.dedent(
        """
        [accounts.a{i:05d}]
        client_id = "{client}"
        client_secret_env = "BENCH_SHARED_SECRET"
        environment = "sandbox"
        api_url = "{url}"
        token_url = "{url}/connect/token"
        rate_limit = "30/m"
        """
    )
    client = SANDBOX_CREDENTIALS[0]  # the sandbox's own client: a probe's token is granted
    path.write_text("".join(block.format(i=i, url=sandbox.url, client=client) for i in range(count)))
    return path


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        proc = psutil.Process(pid)
        for item in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = item.cpu_times()
                total += times.user + times.system
    return total


def measure(
    design: Design, count: int, *, redis_proc: RedisServer, sandbox: SandboxProc, workdir: Path, window_s: float
) -> dict[str, Any]:
    """One worker, ``count`` accounts, nothing queued: Redis commands/s and CPU over ``window_s``."""
    redis_proc.flush()
    values = bridge_settings(
        redis_proc.url,
        sandbox,
        BRIDGE_KEY_PREFIX="idle:",
        BRIDGE_ACCOUNTS_FILE=str(accounts_file(workdir, sandbox, count)),
        BENCH_SHARED_SECRET=SECRET,
    )
    started = time.monotonic()
    workers = start_workers(values, count=1, concurrency=4, workdir=workdir, pythonpath=design.pythonpath, timeout=600)
    try:
        ready_s = time.monotonic() - started
        time.sleep(WARMUP_S)
        published = int(redis_proc.client().hlen("idle:quotas"))  # 0 for the polling design (it has no such hash)
        worker_pid, redis_pid = workers[0].process.pid, redis_proc.process.pid
        before, cpu_w0, cpu_r0, t0 = redis_proc.command_calls(), cpu_s(worker_pid), cpu_s(redis_pid), time.monotonic()
        time.sleep(window_s)
        after, cpu_w1, cpu_r1, t1 = redis_proc.command_calls(), cpu_s(worker_pid), cpu_s(redis_pid), time.monotonic()
        latencies = dispatch_latency(values, count) if design.pythonpath is None else []
    finally:
        stop_workers(workers)
    elapsed = t1 - t0
    delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
    delta["info"] = delta.get("info", 0) - 1  # the INFO that read ``before``
    per_s = {name: n / elapsed for name, n in sorted(delta.items(), key=lambda item: -item[1]) if n > 0}
    return {
        "design": design.name,
        "accounts": count,
        "ready_s": ready_s,
        "quotas_published": published,
        "window_s": elapsed,
        "redis_commands_per_s": sum(per_s.values()),
        "by_command": per_s,
        "worker_cpu_pct": 100 * (cpu_w1 - cpu_w0) / elapsed,
        "redis_cpu_pct": 100 * (cpu_r1 - cpu_r0) / elapsed,
        "dispatch_ms": latencies,
        "dispatch_p50_ms": percentile(latencies, 50) if latencies else None,
        "dispatch_p99_ms": percentile(latencies, 99) if latencies else None,
    }


def finished(client: BridgeClient, job_id: str) -> bool:
    return client.get(job_id).finished


def dispatch_latency(values: dict[str, str], count: int) -> list[float]:
    """Submission -> call start (``started_at``), in ms, of ``PROBES`` jobs submitted one at a time to
    idle accounts spread over the ``count``; each account first makes one call (its token), untimed."""
    names = [f"a{i:05d}" for i in range(0, count, max(1, count // PROBES))][:PROBES]
    rounds = -(-PROBES_FEW // len(names))  # with few accounts, each is probed again once its slot is free
    client = BridgeClient(settings_from(values))
    try:
        op = {"method": "GET", "path": "/Vehicles", "coalesce": False}
        warm = client.submit_many([{**op, "account": name} for name in names])
        wait_until(lambda: all(finished(client, job_id) for job_id in warm), timeout=120, what="the warm-up calls")
        latencies = []
        for name in [name for _ in range(rounds) for name in names]:
            if name == names[0]:
                time.sleep(SLOT_S)  # every probed account idle: its last call a slot interval ago or more
            job_id = client.submit({**op, "account": name})
            wait_until(functools.partial(finished, client, job_id), timeout=30, what="a probe")
            job = client.get(job_id)
            if job.started_at is None:
                raise RuntimeError(f"probe {job_id} finished without started_at ({job.status})")
            latencies.append((job.started_at - job.submitted_at).total_seconds() * 1000)
            time.sleep(0.05)  # the load pattern: one job at a time, each on an idle account
        return latencies
    finally:
        client.close()


def run(*, quick: bool) -> Path:
    """Quick: 5 s windows, the old design at 1 and 100 accounts. Full: 10 s, the old one at 1,000 too."""
    counts = (1, 100, 1_000, 10_000)
    old_counts = (1, 100) if quick else (1, 100, 1_000)
    window_s = 5.0 if quick else 10.0
    stamp = utc_stamp()
    rows: list[dict[str, Any]] = []
    with workspace("idle") as workdir, ExitStack() as stop:
        redis_proc = start_redis(workdir)
        stop.callback(redis_proc.stop)
        sandbox = start_sandbox(workdir)
        stop.callback(sandbox.stop)
        designs = [
            Design("events (this tree)", None),
            Design(f"polling ({OLD_COMMIT})", str(extract_old(workdir, OLD_COMMIT))),
        ]
        for count in counts:
            for design in designs:
                if design.pythonpath is not None and count not in old_counts:
                    continue
                print(f"  {design.name}: {count} accounts, {window_s:.0f} s window", flush=True)
                row = measure(design, count, redis_proc=redis_proc, sandbox=sandbox, workdir=workdir, window_s=window_s)
                top = ", ".join(f"{name} {n:.1f}" for name, n in list(row["by_command"].items())[:6])
                print(f"    {row['redis_commands_per_s']:.1f} commands/s ({top})", flush=True)
                rows.append(row)
    headers = ["design", "accounts", "Redis cmds/s", "worker CPU %", "Redis CPU %", "ready s", "dispatch p50/p99 ms"]
    table = [
        [
            r["design"],
            r["accounts"],
            r["redis_commands_per_s"],
            r["worker_cpu_pct"],
            r["redis_cpu_pct"],
            r["ready_s"],
            f"{r['dispatch_p50_ms']:.1f} / {r['dispatch_p99_ms']:.1f}" if r["dispatch_ms"] else "-",
        ]
        for r in rows
    ]
    text = print_table("Idle -- one worker (-c 4), nothing queued, N accounts at 30/m", headers, table, digits=1)
    record = {
        "quick": quick,
        "window_s": window_s,
        "old_commit": OLD_COMMIT,
        "goal": "<= 20 Redis commands/s per worker process, whatever the number of accounts",
        "rows": rows,
        "tables": [text],
    }
    path = write_result("idle", record, stamp=stamp)
    print(f"\nwritten: {path}")
    return path
