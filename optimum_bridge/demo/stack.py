"""Everything the demo starts, registered on one ExitStack so that every exit path stops it.

Order matters on the way out (LIFO): signals are ignored first (cleanup is
bounded and must not be cut short by a second Ctrl-C), then the workers stop
(SIGTERM, bounded wait, SIGKILL), the temp directory, receiver and sandbox go,
the demo's keys are deleted, and last the private Redis, if the demo started one.
The pieces themselves (private Redis, worker processes, receiver, the bridge's
environment) come from ``optimum_bridge.devstack``, shared with the tests and
the benchmarks; what is the demo's own is here: what to start, and in what order.
"""

from __future__ import annotations

import secrets
import signal
import tempfile
import threading
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from optimum_bridge.config.environments import SANDBOX_CREDENTIALS
from optimum_bridge.demo.receiver import start_receiver
from optimum_bridge.demo.redis_server import DemoRedis, redis_for_demo
from optimum_bridge.devstack import (
    CallbackReceiver,
    WorkerProcess,
    bridge_settings,
    child_env,
    delete_prefix,
    new_callback_secret,
    start_worker,
    stop_workers,
    wait_ready,
)
from optimum_bridge.keys import Keys
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.sandbox import SandboxConfig, SandboxServer

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0


@dataclass(frozen=True)
class Plan:
    """What one run does."""

    fleet_size: int
    quota: RateLimit
    workers: int
    concurrency: int
    live: bool
    timeout_s: float | None
    schedule: bool = False  # the nightly sync as a schedule (demo.schedule)

    @property
    def operations(self) -> int:
        """The fleet, then one vehicle and one trips call per vehicle."""
        return 1 + 2 * self.fleet_size

    @property
    def margin_s(self) -> float:
        """Limiter safety margin: small for per-second quotas, the default otherwise."""
        return 0.15 if self.quota.window_s <= 1 else 0.25

    def wait_s(self) -> float:
        """How long to wait for the jobs: the explicit timeout, or thrice the expected time plus a minute."""
        if self.timeout_s is not None:
            return self.timeout_s
        per_s = self.quota.limit / (self.quota.window_s + self.margin_s)
        return 60 + 3 * self.operations / per_s


@dataclass
class Running:
    """Everything one run started (each registered for cleanup on the ExitStack)."""

    db: DemoRedis
    redis: redis.Redis
    sandbox: SandboxServer
    receiver: CallbackReceiver
    workers: list[WorkerProcess]
    settings: dict[str, str]


def start_stack(stack: ExitStack, plan: Plan, redis_url: str) -> Running:
    """Start Redis (or reuse it), the sandbox, the receiver and the workers, each on ``stack``."""
    prefix = f"demo-{secrets.token_hex(6)}:"
    secret = new_callback_secret()
    db = redis_for_demo(redis_url)
    stack.callback(db.stop)  # a no-op for a Redis we did not start
    client = db.client()
    stack.callback(client.close)
    stack.callback(delete_prefix, client, prefix)  # runs after the workers are stopped
    sandbox = stack.enter_context(SandboxServer(SandboxConfig(quota=str(plan.quota), fleet_size=plan.fleet_size)))
    receiver = start_receiver(secret)
    stack.callback(receiver.stop)
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="obr-demo-")))
    settings = demo_settings(plan, db, sandbox, prefix, secret)
    workers: list[WorkerProcess] = []
    stack.callback(stop_workers, workers, grace_s=STOP_GRACE_S)  # also those started before a failure
    start_workers(workers, plan, child_env(settings), workdir)
    stack.callback(ignore_signals)  # runs first on the way out
    return Running(db, client, sandbox, receiver, workers, settings)


def start_workers(started: list[WorkerProcess], plan: Plan, env: dict[str, str], workdir: Path) -> None:
    """Start ``plan.workers`` worker processes into ``started``, each with a threads pool of ``plan.concurrency``."""
    run = uuid.uuid4().hex[:6]
    for index in range(plan.workers):
        name = f"demo{index + 1}-{run}"
        started.append(start_worker(env, name=name, workdir=workdir, concurrency=plan.concurrency, loglevel="INFO"))


def workers_ready(running: Running, *, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until every worker sends its heartbeat; ``WorkerFailed`` if one exits or time runs out."""
    keys = Keys(running.settings["BRIDGE_KEY_PREFIX"])
    expected = len(running.workers)
    wait_ready(running.workers, lambda: int(running.redis.zcard(keys.workers)) >= expected, timeout=timeout_s)


def demo_settings(plan: Plan, db: DemoRedis, sandbox: SandboxServer, prefix: str, secret: str) -> dict[str, str]:
    """The environment every demo process shares (spec §3 names)."""
    return bridge_settings(
        db.url,
        sandbox,
        prefix=prefix,
        callback_secret=secret,
        OPTIMUM_CLIENT_ID=SANDBOX_CREDENTIALS[0],
        OPTIMUM_CLIENT_SECRET=SANDBOX_CREDENTIALS[1],
        OPTIMUM_RATE_LIMIT=str(plan.quota),
        BRIDGE_RATE_LIMIT_MARGIN_S=str(plan.margin_s),
        BRIDGE_RETRY_BASE_S="1",
        BRIDGE_CALLBACK_SCHEDULE_S="1,2,5",
        BRIDGE_LOG_LEVEL="INFO",
    )


def display_url(url: str) -> str:
    """A Redis URL without its credentials."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def ignore_signals() -> None:
    """During cleanup a second Ctrl-C must not leave children behind (cleanup is bounded)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
