"""Shared fixtures: a private Redis, the sandbox, real worker processes, a callback receiver.

Every test gets its own key prefix on one private ``redis-server`` started for
the run, so nothing here touches a database it did not create. The processes
and servers come from ``optimum_bridge.harness``, the harness the demo and the
benchmarks use too; this module only turns them into fixtures.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from optimum_bridge import BridgeClient, harness
from optimum_bridge.harness import (
    CallbackReceiver,
    RedisServer,
    WaitTimeout,
    WorkerProcess,
    bridge_settings,
    child_env,
    delete_prefix,
    free_port,
    settings_from,
    start_redis,
)
from optimum_bridge.harness.sentinel import SentinelGroup, start_sentinel_group
from optimum_bridge.keys import Keys
from optimum_bridge.runtime import Runtime
from optimum_bridge.sandbox import SandboxConfig, SandboxServer
from optimum_bridge.settings import Settings

pytest_plugins = ["tests.tiers"]  # marks every test redis / processes / fast (tests/tiers.py)
__all__ = [
    "CALLBACK_SECRET",
    "ROOT",
    "bridge_env",
    "free_port",
    "run_cli",
    "settings_from",
    "wait_finished",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis("--appendonly", "no")
    yield server
    server.stop()


@pytest.fixture
def private_redis() -> Iterator[Callable[..., RedisServer]]:
    """Factory: a redis-server of the test's own (``--appendonly yes``, ``--requirepass``...), stopped afterwards."""
    servers: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        servers.append(start_redis(*extra))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sentinel_group() -> Iterator[Callable[..., SentinelGroup]]:
    """Factory: a primary, replicas and three sentinels on loopback (``harness.sentinel``), stopped afterwards."""
    groups: list[SentinelGroup] = []

    def start(**options: Any) -> SentinelGroup:
        groups.append(start_sentinel_group(**options))
        return groups[-1]

    yield start
    for group in groups:
        group.stop()


@pytest.fixture
def prefix(redis_server: RedisServer) -> Iterator[str]:
    """A key prefix owned by this test; its keys are deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}:"
    yield name
    delete_prefix(redis_server.client(), name)


@pytest.fixture
def sandbox() -> Iterator[Callable[..., SandboxServer]]:
    """Factory: ``sandbox(quota="10/s", ...)`` starts a simulator on a free port."""
    servers: list[SandboxServer] = []

    def start(**knobs: Any) -> SandboxServer:
        server = SandboxServer(SandboxConfig(**knobs), host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def bridge_env(redis_url: str, prefix: str, sandbox: SandboxServer, **overrides: str) -> dict[str, str]:
    """The environment of a bridge process talking to ``sandbox``, with retries fast enough for tests."""
    fast = {"BRIDGE_RETRY_BASE_S": "0.2", "BRIDGE_CALLBACK_SCHEDULE_S": "0.2,0.2,0.2"}
    return child_env(
        bridge_settings(redis_url, sandbox, prefix=prefix, callback_secret=CALLBACK_SECRET, **{**fast, **overrides})
    )


@pytest.fixture
def runtime() -> Iterator[Callable[[Settings], Runtime]]:
    """Factory: an in-process ``Runtime``, closed at teardown even when the test fails."""
    opened: list[Runtime] = []

    def build(settings: Settings) -> Runtime:
        opened.append(Runtime(settings))
        return opened[-1]

    yield build
    for rt in opened:
        rt.close()


@pytest.fixture
def bridge(redis_server, prefix, sandbox, runtime):
    """Factory: (runtime, client, sandbox) sharing one prefix; extra env overrides the settings."""

    def build(sandbox_knobs: dict | None = None, **env: str) -> tuple[Runtime, BridgeClient, object]:
        sb = sandbox(**({"quota": None} | (sandbox_knobs or {})))
        settings = settings_from(bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="100/s", **env))
        rt = runtime(settings)
        return rt, BridgeClient(settings, client=rt.redis), sb

    return build


def run(rt: Runtime, job_id: str) -> str:
    """What a worker does for a job: the scheduler gives it a slot (moving due retries back to the
    lanes first), then the executor runs the dispatch it was given."""
    keys = Keys(rt.settings.key_prefix)
    deadline = time.monotonic() + 5
    while not rt.jobs.status(job_id).finished:
        next_in = rt.dispatchers["default"].run().next_in_s
        if rt.redis.zscore(keys.dispatched, job_id) is not None:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} was never given a slot")
        time.sleep(next_in)
    return rt.executor.run(job_id, int(rt.jobs.field(job_id, "dispatch") or 0))


def calls_to(sb, path: str) -> int:
    return len([e for e in sb.stats()["log"] if e["path"] == path])


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``workers(env, concurrency=4)`` starts a worker and waits until it consumes."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *, concurrency: int = 4, pool: str = "threads", wait: bool = True) -> WorkerProcess:
        name = f"w{len(started)}-{uuid.uuid4().hex[:6]}"
        worker = harness.start_worker(env, name=name, workdir=tmp_path, pool=pool, concurrency=concurrency, cwd=ROOT)
        started.append(worker)
        if wait:
            harness.wait_ready([worker], lambda: "ready." in worker.log())
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    """A callback receiver recording every POST; ``receiver.statuses`` scripts its answers."""
    with CallbackReceiver() as rec:
        yield rec
