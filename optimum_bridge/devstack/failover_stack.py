"""The processes and the load of a failover run (``devstack.failover``).

``start_stack`` starts the workers and the ingress on a Sentinel group;
``Producers`` are the two producers -- one through the ingress over HTTP, one
through ``BridgeClient`` -- that submit at a steady pace and resubmit, with the
same idempotency key, whatever is refused, recording what was acknowledged in
the run's ``FailoverReport``.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis

from optimum_bridge.devstack.env import child_env, settings_from
from optimum_bridge.devstack.ports import LOOPBACK, free_port
from optimum_bridge.devstack.processes import spawn, stop_process, tail
from optimum_bridge.devstack.receiver import CallbackReceiver
from optimum_bridge.devstack.sentinel import SentinelGroup
from optimum_bridge.devstack.waiting import wait_until
from optimum_bridge.devstack.workers import WorkerProcess, start_worker, stop_workers, wait_ready
from optimum_bridge.errors import BridgeUnavailable
from optimum_bridge.producer import BridgeClient

if TYPE_CHECKING:
    from optimum_bridge.devstack.failover import FailoverReport

API_KEY = "failover-key"
#: How long the producers take to submit everything: steady, so that submissions go on through
#: both failovers (the second comes at least ~9 s after the first: see ``SentinelGroup.calm_until``).
SUBMIT_OVER_S = 24.0


@dataclass
class Stack:
    """The processes of one run."""

    env: dict[str, str]
    workers: list[WorkerProcess]
    ingress: Any  # subprocess.Popen[bytes]
    ingress_log: Path
    http: httpx.Client


class Stopped(Exception):
    """The run ended (or failed) while a producer was still resubmitting."""


class Producers:
    """Two threads submitting ``operations`` operations over ``SUBMIT_OVER_S``, resubmitting what is refused."""

    def __init__(self, stack: Stack, report: FailoverReport, plates: list[str], receiver: CallbackReceiver) -> None:
        self._stack = stack
        self._report = report
        self._plates = plates
        self._receiver = receiver
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._pace = report.operations / SUBMIT_OVER_S
        self._threads = [
            threading.Thread(target=self._run, args=(half,), name=f"producer-{half}", daemon=True) for half in (0, 1)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def acknowledged(self) -> int:
        with self._lock:
            return len(self._report.acknowledged)

    def _run(self, half: int) -> None:
        client = BridgeClient(settings_from(self._stack.env))
        started = time.monotonic()
        try:
            for n, index in enumerate(range(half, self._report.operations, 2)):
                if self.stopping.wait(max(0.0, started + n * 2 / self._pace - time.monotonic())):  # pacing
                    return
                key = f"op-{self._plates[index]}"
                operation = {
                    "method": "GET",
                    "path": f"/Vehicles/{self._plates[index]}",
                    "idempotency_key": key,
                    "callback": {"url": self._receiver.url},
                }
                job = self._submit_http(operation) if half == 0 else self._submit_client(client, operation)
                with self._lock:
                    self._report.acknowledged[key] = job
        except Stopped:
            return
        finally:
            client.close()

    def _refused(self) -> None:
        with self._lock:
            self._report.refused += 1
        if self.stopping.wait(0.05):  # a producer's retry backoff
            raise Stopped

    def _submit_http(self, operation: dict[str, Any]) -> str:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while True:
            try:
                answer = self._stack.http.post("/v1/operations", json=operation, headers=headers)
            except httpx.HTTPError:
                self._refused()
                continue
            if answer.status_code in (200, 201, 202):
                return str(answer.json()["id"])
            if answer.status_code != 503:
                raise RuntimeError(f"the ingress answered {answer.status_code}: {answer.text[:200]}")
            self._refused()

    def _submit_client(self, client: BridgeClient, operation: dict[str, Any]) -> str:
        while True:
            try:
                return client.submit(operation)
            except (BridgeUnavailable, redis.RedisError):
                self._refused()


def start_stack(group: SentinelGroup, env: dict[str, str], workdir: Path, *, workers: int, concurrency: int) -> Stack:
    """Workers and the ingress on ``group``; returns once every worker consumes and the ingress answers."""
    env = child_env({**env, "BRIDGE_API_KEYS": API_KEY, "BRIDGE_API_PORT": str(free_port())})
    started = [
        start_worker(env, name=f"fo{i}", workdir=workdir, concurrency=concurrency, cwd=workdir) for i in range(workers)
    ]
    wait_ready(started, lambda: all("ready." in w.log() for w in started))
    ingress_log = workdir / "ingress.log"
    ingress = spawn([sys.executable, "-m", "optimum_bridge.cli", "api"], log_path=ingress_log, env=env, cwd=workdir)
    http = httpx.Client(base_url=f"http://{LOOPBACK}:{env['BRIDGE_API_PORT']}", timeout=30)

    def answers() -> bool:
        if ingress.poll() is not None:
            raise RuntimeError(f"the ingress exited: {tail(ingress_log, 5)}")
        try:
            return http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(answers, timeout=30, what="the ingress to answer")
    return Stack(env, started, ingress, ingress_log, http)


def stop_stack(stack: Stack) -> None:
    """Stop the ingress and the workers."""
    stack.http.close()
    stop_process(stack.ingress, grace_s=10)
    stop_workers(stack.workers, grace_s=20)
