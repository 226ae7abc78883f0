"""The upkeep loop without Redis or Celery: timers run when due, and one failing never stops the others."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import redis

from optimum_bridge.process.upkeep import Timer, Upkeep
from tests.support import ROOT


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_timer_runs_when_due():
    clock = FakeClock()
    runs: list[str] = []
    upkeep = Upkeep(
        [Timer("fast", 0.25, lambda: runs.append("fast")), Timer("slow", 2.0, lambda: runs.append("slow"))],
        clock=clock,
    )
    assert upkeep.run_due() == 0.25 and runs == ["fast", "slow"]
    for step in range(1, 9):  # 2 s in steps of 0.25 s
        clock.now = step * 0.25
        upkeep.run_due()
    assert runs.count("fast") == 9 and runs.count("slow") == 2


def test_a_failing_timer_never_stops_the_others(caplog):
    clock = FakeClock()
    runs: list[str] = []

    def broken() -> None:
        raise RuntimeError("bug")

    def redis_down() -> None:
        raise redis.ConnectionError("down")

    upkeep = Upkeep(
        [Timer("broken", 1, broken), Timer("redis", 1, redis_down), Timer("ok", 1, lambda: runs.append("ok"))],
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="optimum_bridge.process.upkeep"):
        for second in range(3):
            clock.now = float(second)
            upkeep.run_due()
    assert runs == ["ok", "ok", "ok"]
    assert "upkeep broken failed; the other timers go on" in caplog.text
    assert "upkeep redis: Redis unavailable (ConnectionError); retrying" in caplog.text
    assert all(t.failing for t in upkeep.timers[:2]) and not upkeep.timers[2].failing


def test_the_loop_thread_stops_when_asked():
    upkeep = Upkeep([Timer("tick", 0.01, lambda: None)])
    upkeep.start()
    upkeep.stop(timeout_s=5)
    assert upkeep._thread is not None and not upkeep._thread.is_alive()


IMPORT_CHECK = """
import sentry_sdk
import optimum_bridge.worker as worker
app = worker.app
queues = sorted(app.amqp.queues.consume_from)
steps = sorted(step.__name__ for step in app.steps["worker"]) + sorted(s.__name__ for s in app.steps["consumer"])
print(queues, steps, sentry_sdk.is_initialized(), app.conf.include)
"""


@pytest.mark.processes
def test_importing_the_worker_module_only_builds_the_app():
    """No connection, no Sentry, no thread at import: a worker starts them (Redis here answers nowhere)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "OPTIMUM_ENVIRONMENT": "sandbox",
        "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
        "SENTRY_DSN": "http://key@127.0.0.1:9/1",
    }
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        "['bridge.callbacks', 'bridge.operations'] ['UpkeepStep', 'WorkerStart', 'RecordUnacked', 'WatchConsumer'] "
        "False ['optimum_bridge.tasks']"
    )
