"""What tests share besides fixtures: waits that fail as assertions, the CLI as a user runs it,
the environment of a bridge process, and one worker step run in-process.

Fixtures stay in ``tests/conftest.py``; the processes and servers come from
``optimum_bridge.devstack``, the harness the demo and the benchmarks use too.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimum_bridge import devstack as harness
from optimum_bridge.devstack import WaitTimeout, bridge_settings, child_env, free_port, settings_from
from optimum_bridge.keys import Keys
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.sandbox import SandboxServer

__all__ = [
    "CALLBACK_SECRET",
    "ROOT",
    "bridge_env",
    "calls_to",
    "free_port",
    "give_slot",
    "run",
    "run_cli",
    "settings_from",
    "wait_finished",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
CALLBACK_SECRET = harness.new_callback_secret(b"test-callback-secret-0123456789")


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """The harness's wait, where running out of time is a failed assertion."""
    try:
        return harness.wait_until(predicate, timeout=timeout, interval=interval, what=what)
    except WaitTimeout as exc:
        raise AssertionError(str(exc)) from None


def wait_finished(client: Any, ids: list[str], *, timeout: float, interval: float = 0.5) -> None:
    """Wait until every job is final, reading only the ones not seen final yet, twice a second.

    Polling every job's status (with its forecast) many times a second loads the test process,
    which also serves the sandbox: its arrival times would then measure our polling, not the bridge.
    """
    pending = set(ids)

    def done() -> bool:
        pending.difference_update({i for i in list(pending) if client.get(i).finished})
        return not pending

    wait_until(done, timeout=timeout, interval=interval, what=f"{len(ids)} jobs to finish")


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``optimum-bridge ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "optimum_bridge.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def bridge_env(redis_url: str, prefix: str, sandbox: SandboxServer, **overrides: str) -> dict[str, str]:
    """The environment of a bridge process talking to ``sandbox``, with retries fast enough for tests."""
    fast = {"BRIDGE_RETRY_BASE_S": "0.2", "BRIDGE_CALLBACK_SCHEDULE_S": "0.2,0.2,0.2"}
    return child_env(
        bridge_settings(redis_url, sandbox, prefix=prefix, callback_secret=CALLBACK_SECRET, **{**fast, **overrides})
    )


def give_slot(rt: Runtime, job_id: str) -> int:
    """What the scheduler does for a job (moving due retries back to the lanes first): a slot and a
    dispatch number, which the job's message would carry (0: the job is finished, no slot needed)."""
    keys = Keys(rt.settings.key_prefix)
    deadline = time.monotonic() + 5
    while not rt.jobs.status(job_id).finished:
        next_in = rt.dispatcher.run("default").next_in_s
        if rt.redis.zscore(keys.dispatched, job_id) is not None:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} was never given a slot")
        time.sleep(0.05 if next_in is None else next_in)
    return int(rt.jobs.field(job_id, "dispatch") or 0)


def run(rt: Runtime, job_id: str) -> str:
    """What a worker does for a job: the slot the scheduler gives, then the executor runs that dispatch
    (that job only: a worker's thread would go on to the next job whose slot is free, see test_chain)."""
    return rt.executor.run(job_id, give_slot(rt, job_id), chain=False)


def calls_to(sb, path: str) -> int:
    return len([e for e in sb.stats()["log"] if e["path"] == path])


def redis_dump(client: Any, prefix: str) -> str:
    """Every key under ``prefix`` and its whole value, whatever its type (streams and scores included), as
    text: what a search for a secret in Redis reads."""
    parts = []
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = client.type(key).decode()
        value = {
            "string": lambda k: client.get(k),
            "hash": lambda k: client.hgetall(k),
            "list": lambda k: client.lrange(k, 0, -1),
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            "set": lambda k: client.smembers(k),
            "stream": lambda k: client.xrange(k),
        }[kind](key)
        parts.append(f"{key!r} {value!r}")
    return "\n".join(parts)
