"""Shared fixtures: a private Redis, the sandbox, real worker processes, a callback receiver.

Every test gets its own key prefix on one private ``redis-server`` started for
the run, so nothing here touches a database it did not create. The processes
and servers come from ``optimum_bridge.devstack``, the harness the demo and the
benchmarks use too; this module only turns them into fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from optimum_bridge import BridgeClient
from optimum_bridge import devstack as harness
from optimum_bridge.clock import Clock
from optimum_bridge.devstack import (
    CallbackReceiver,
    RedisServer,
    WorkerProcess,
    delete_prefix,
    settings_from,
    start_redis,
)
from optimum_bridge.devstack.sentinel import SentinelGroup, start_sentinel_group
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.sandbox import SandboxConfig, SandboxServer
from optimum_bridge.settings import Settings
from tests.support import ROOT, bridge_env

pytest_plugins = ["tests.support.tiers"]  # marks every test redis / processes / fast (tests/support/tiers.py)


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
    """Factory: a primary, replicas and three sentinels on loopback (``devstack.sentinel``), stopped afterwards."""
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
    """Factory: ``sandbox(quota="10/s", clock=None, ...)`` starts a simulator on a free port."""
    servers: list[SandboxServer] = []

    def start(clock: Clock | None = None, **knobs: Any) -> SandboxServer:
        server = SandboxServer(SandboxConfig(**knobs), host="127.0.0.1", port=0, clock=clock)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


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
