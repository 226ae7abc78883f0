"""A worker whose Celery consumer is connected but consumes nothing exits within 30 s (spec §16).

Real worker processes: one idle for longer than the watchdog's limit goes on
and still runs a job (an idle consumer beats: its ``BRPOP`` is answered every
second), then its consumer is stalled (``stuck_consumer``) and it logs one
line and exits non-zero.
"""

from __future__ import annotations

import sys
import time

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import start_worker, wait_ready
from optimum_bridge.process.watchdog import EXIT_CODE, LIMIT_S
from tests.support import ROOT, bridge_env, settings_from, wait_finished, wait_until


def test_a_consumer_that_stops_consuming_exits_the_worker_and_an_idle_one_does_not(
    redis_server, prefix, sandbox, tmp_path
):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="100/s")
    flag = tmp_path / "stall"
    command = (sys.executable, "-m", "tests.faults.stuck_consumer", str(flag), "worker")
    worker = start_worker(env, name="stuck", workdir=tmp_path, command=command, cwd=ROOT, concurrency=2)
    try:
        wait_ready([worker], lambda: "ready." in worker.log())
        time.sleep(LIMIT_S + 5)  # the point: idle for longer than the limit, and nothing happens
        worker.check_running()
        client = BridgeClient(settings_from(env))
        ids = client.submit_many([{"method": "GET", "path": "/Vehicles/AB-123-CD"}])
        wait_finished(client, ids, timeout=30)
        flag.touch()
        stalled_at = time.monotonic()
        wait_until(lambda: worker.process.poll() is not None, timeout=40, interval=0.2, what="the worker to exit")
        assert time.monotonic() - stalled_at < 30
        assert worker.process.returncode == EXIT_CODE
        lines = [line for line in worker.log().splitlines() if "the Celery consumer is connected but" in line]
        assert len(lines) == 1, worker.tail()
    finally:
        worker.stop()
