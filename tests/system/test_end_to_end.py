"""End to end: real workers, the sandbox over HTTP, signed callbacks verified independently."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient
from optimum_bridge.keys import CALLBACKS_QUEUE, Keys
from tests.support import CALLBACK_SECRET, ROOT, bridge_env, settings_from, wait_until


@pytest.mark.parametrize("pool", ["threads", "prefork", "gevent"])
def test_operation_succeeds_and_callback_verifies(redis_server, prefix, sandbox, workers, receiver, pool):
    sb = sandbox(quota="10/s", fleet_size=12)
    env = bridge_env(redis_server.url, prefix, sb)
    worker = workers(env, concurrency=2, pool=pool)
    assert f"concurrency: 2 ({'thread' if pool == 'threads' else pool})" in worker.log()  # the pool asked for
    assert "MonkeyPatchWarning" not in worker.log()  # gevent patched before anything opened a socket
    client = BridgeClient(settings_from(env))
    job_id = client.submit(
        {"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}, "metadata": {"batch": "b1"}}
    )
    status = client.wait(job_id, timeout=30)
    assert status.status == "succeeded", status
    assert status.attempts == 1
    assert isinstance(status.response.body, list) and len(status.response.body) == 12

    wait_until(lambda: receiver.received, what="the callback")
    callback = receiver.received[0]
    payload = Webhook(CALLBACK_SECRET).verify(callback.body, callback.headers)
    assert payload["type"] == "operation.succeeded"
    assert payload["data"]["id"] == job_id
    assert payload["data"]["operation"]["metadata"] == {"batch": "b1"}
    assert json.loads(callback.body)["data"] == json.loads(status.model_dump_json())


def plain_celery(env: dict[str, str], log_path, *extra: str) -> subprocess.Popen[bytes]:
    """``celery -A optimum_bridge.worker worker [extra]``, exactly as an operator types it."""
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "optimum_bridge.worker", "worker", *extra],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.mark.processes
def test_the_plain_celery_command_runs_operations_and_callbacks(redis_server, prefix, sandbox, receiver, tmp_path):
    """Celery's defaults (prefork, no -Q): the documented command must do the whole job."""
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    worker = plain_celery(env, tmp_path / "plain.log")
    try:
        client = BridgeClient(settings_from(env))
        job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
        assert client.wait(job_id, timeout=60).status == "succeeded"
        wait_until(lambda: receiver.received, timeout=30, what="the callback from a plain celery worker")
        payload = Webhook(CALLBACK_SECRET).verify(receiver.received[0].body, receiver.received[0].headers)
        assert payload["data"]["id"] == job_id
        banner = (tmp_path / "plain.log").read_text()
        assert "(prefork)" in banner and ".> bridge.operations" in banner and ".> bridge.callbacks" in banner
    finally:
        stop(worker)


@pytest.mark.processes
def test_dash_q_still_narrows_a_worker_to_one_queue(redis_server, prefix, sandbox, receiver, tmp_path):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_CALLBACK_SCHEDULE_S="0.2")
    operations = plain_celery(env, tmp_path / "ops.log", "-Q", "bridge.operations", "-P", "threads")
    callbacks = None
    try:
        client = BridgeClient(settings_from(env))
        receiver.statuses = [500]  # the first delivery, made by the operations worker, fails: its retry is a task
        job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
        assert client.wait(job_id, timeout=60).status == "succeeded"
        banner = (tmp_path / "ops.log").read_text()
        assert ".> bridge.operations" in banner and "bridge.callbacks" not in banner
        redis = redis_server.client()
        wait_until(
            lambda: redis.llen(Keys(prefix).queue(CALLBACKS_QUEUE)) == 1,
            timeout=30,
            what="the retry on the callbacks queue, which nobody consumes yet",
        )
        assert receiver.attempts == 1
        callbacks = plain_celery(env, tmp_path / "cbs.log", "-Q", "bridge.callbacks", "-P", "threads")
        wait_until(lambda: receiver.received, timeout=30, what="the callback once a callbacks worker runs")
        assert "bridge.operations" not in (tmp_path / "cbs.log").read_text()
    finally:
        stop(operations)
        if callbacks is not None:
            stop(callbacks)
