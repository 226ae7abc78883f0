"""End to end: real workers, the sandbox over HTTP, signed callbacks verified independently."""

from __future__ import annotations

import json

import pytest
from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient

from .conftest import CALLBACK_SECRET, bridge_env, settings_from, wait_until


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
