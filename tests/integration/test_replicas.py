"""``BRIDGE_REDIS_MIN_REPLICAS`` (spec §16): what the bridge acknowledges has reached the replicas.

A primary and one replica, both private; the replica is frozen (SIGSTOP) to
make ``WAIT`` fall short. Then a submission is refused as retryable (the same
idempotency key again is safe), a job's call is not sent, and a finished job's
callback is held, until the replica is back.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from optimum_bridge import AsyncBridgeClient, BridgeClient, BridgeUnavailable
from optimum_bridge.devstack import RedisServer
from optimum_bridge.errors import Deferred
from optimum_bridge.ingress.app import create_app
from optimum_bridge.jobs.steps import JobSteps
from optimum_bridge.keys import JobField
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import bridge_env, calls_to, give_slot, run, settings_from, wait_until

KEY = "key-one"
PATH = f"/Vehicles/{generate_fleet(42, 1).plates()[0]}"
OP = {"method": "GET", "path": PATH, "idempotency_key": "order-1"}


class InProcess(httpx.BaseTransport):
    """The ingress app called in-process (as ``tests/system/test_ingress.py`` does)."""

    def __init__(self, app: object) -> None:
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def roundtrip() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            return httpx.Response(response.status_code, headers=response.headers, content=await response.aread())

        return asyncio.run(roundtrip())


@pytest.fixture
def replicated(private_redis) -> tuple[RedisServer, RedisServer]:
    primary = private_redis()
    replica = private_redis("--replicaof", "127.0.0.1", str(primary.port))
    wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", what="the replica")
    return primary, replica


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """The replica stops answering (its primary's WAIT counts it out) until the block ends."""
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


def test_a_submission_is_acknowledged_once_on_the_replica_or_refused_as_retryable(replicated, sandbox):
    primary, replica = replicated
    env = bridge_env(primary.url, "rep:", sandbox(quota=None), BRIDGE_REDIS_MIN_REPLICAS="1", BRIDGE_API_KEYS=KEY)
    client = BridgeClient(settings_from(env))
    http = httpx.Client(transport=InProcess(create_app(settings_from(env))), base_url="http://ingress.test")
    first = client.submit(OP)
    assert replica.client().hget(f"rep:job:{first}", JobField.status) == b"queued"  # no later than the answer
    with frozen(replica):
        with pytest.raises(BridgeUnavailable, match="reached 0 of 1 required replica"):
            client.submit({**OP, "idempotency_key": "order-2"})
        auth = {"Authorization": f"Bearer {KEY}"}
        answer = http.post("/v1/operations", json={**OP, "idempotency_key": "order-2"}, headers=auth)
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
        assert "BRIDGE_REDIS_MIN_REPLICAS" in answer.json()["detail"]
    again = client.submit({**OP, "idempotency_key": "order-2"})  # the producer's retry: one job, now replicated
    assert replica.client().hget(f"rep:job:{again}", JobField.status) == b"queued"
    assert client.submit({**OP, "idempotency_key": "order-2"}) == again
    http.close()
    client.close()


def test_more_replicas_than_there_are_refuses_every_submission(replicated, sandbox):
    primary, _ = replicated
    env = bridge_env(primary.url, "rep:", sandbox(quota=None), BRIDGE_REDIS_MIN_REPLICAS="2")
    with BridgeClient(settings_from(env)) as client, pytest.raises(BridgeUnavailable, match="1 of 2"):
        client.submit(OP)


def test_no_call_goes_out_and_no_callback_leaves_before_the_replica_has_them(replicated, sandbox, runtime, receiver):
    primary, replica = replicated
    sb = sandbox(quota=None)
    env = bridge_env(primary.url, "rep:", sb, BRIDGE_REDIS_MIN_REPLICAS="1", BRIDGE_CALLBACK_ALLOW_PRIVATE="true")
    rt = runtime(settings_from(env))
    client = BridgeClient(rt.settings, client=rt.redis)
    job = client.submit({**OP, "callback": {"url": receiver.url}})
    with frozen(replica):
        assert run(rt, job) == "deferred"  # the "call sent" record did not reach the replica
    assert calls_to(sb, PATH) == 0
    assert replica.client().hget(f"rep:job:{job}", JobField.inflight) == b"0"
    # Once the replica is back the call goes out; the replica stops while the API answers, so the
    # finished state cannot reach it: the worker that finished the job must not send its callback.
    api = rt.accounts["default"].api
    send = api.send

    def send_then_freeze(*args: Any, **kwargs: Any) -> Any:
        answer = send(*args, **kwargs)
        replica.process.send_signal(signal.SIGSTOP)
        return answer

    api.send = send_then_freeze  # type: ignore[method-assign]
    try:
        assert run(rt, job) == "succeeded"
        assert calls_to(sb, PATH) == 1
        # The first delivery (a thread of the worker process) hands it to the delivery path, unsent.
        wait_until(lambda: rt.redis.zcard(rt.keys.due) == 1, what="the held callback handed over")
        assert receiver.received == [], "no callback before the replica has the finished state"
        assert rt.callbacks.deliver(job, 1) == "later"  # nor from the delivery path
        assert receiver.received == []
    finally:
        api.send = send  # type: ignore[method-assign]
        replica.process.send_signal(signal.SIGCONT)
    assert rt.callbacks.deliver(job, 1) == "delivered"
    assert len(receiver.received) == 1
    assert replica.client().hget(f"rep:job:{job}", JobField.status) == b"succeeded"


def test_a_promoted_replica_without_the_scripts_still_replicates_the_write(replicated, sandbox, monkeypatch):
    """Scripts are not replicated, and redis-py loads a pipeline's scripts once, before its retries:
    a pipeline (script + WAIT) retried on a promoted replica finds none. Here, without the failover:
    the pipeline loads nothing and the primary's script cache is empty."""
    primary, replica = replicated
    env = bridge_env(primary.url, "rep:", sandbox(quota=None), BRIDGE_REDIS_MIN_REPLICAS="1")
    with BridgeClient(settings_from(env)) as client:
        client.submit(OP)
        monkeypatch.setattr(redis.client.Pipeline, "load_scripts", lambda self: None)
        primary.client().script_flush()
        job = client.submit({**OP, "idempotency_key": "order-3"})
        assert replica.client().hget(f"rep:job:{job}", JobField.status) == b"queued"


def test_a_batch_is_acknowledged_once_its_seal_is_on_the_replica(replicated, sandbox, monkeypatch):
    """The seal is a batch's last write: the replica falls silent after its jobs, and the batch is refused."""
    primary, replica = replicated
    env = bridge_env(primary.url, "rep:", sandbox(quota=None), BRIDGE_REDIS_MIN_REPLICAS="1")
    submit_many = JobSteps.submit_many

    def then_freeze(self: JobSteps, *args: Any, **kwargs: Any) -> Any:
        result = yield from submit_many(self, *args, **kwargs)
        replica.process.send_signal(signal.SIGSTOP)  # after the jobs' own WAIT: only the seal's is left
        return result

    monkeypatch.setattr(JobSteps, "submit_many", then_freeze)
    try:
        with BridgeClient(settings_from(env)) as client, pytest.raises(BridgeUnavailable, match="0 of 1"):
            client.submit_batch([{**OP, "idempotency_key": "batch-1"}])
    finally:
        replica.process.send_signal(signal.SIGCONT)


def test_no_call_goes_out_when_the_claim_is_not_on_the_redis_that_records_the_call(bridge):
    """redis-py retries a write on the primary a failover promoted; there the claim may be missing
    (it had not reached the replica). The "call sent" record then finds another lease, or none."""
    rt, client, _ = bridge()
    job = client.submit(OP)
    dispatch = give_slot(rt, job)
    quota = rt.accounts["default"].api.quota
    claim = rt.jobs.claim(job, dispatch, "w1", quota=quota, account="default", lease_ms=30_000)
    assert claim.outcome == "ok"
    deadline = rt.redis.zscore(rt.keys.leases, job)
    rt.redis.zrem(rt.keys.leases, job)  # what the promoted replica has: no lease
    with pytest.raises(Deferred):
        rt.jobs.mark_sent(job, dispatch, quota=quota, account="default", owner="w1")
    rt.redis.zadd(rt.keys.leases, {job: deadline or 0})
    assert rt.jobs.mark_sent(job, dispatch, quota=quota, account="default", owner="w1") >= 1


def test_the_asyncio_client_waits_for_the_replica_too(replicated, sandbox):
    primary, replica = replicated
    env = bridge_env(primary.url, "rep:", sandbox(quota=None), BRIDGE_REDIS_MIN_REPLICAS="1")

    async def submit_twice() -> str:
        async with AsyncBridgeClient(settings_from(env)) as client:
            job = await client.submit({**OP, "idempotency_key": "async-1"})
            assert replica.client().hget(f"rep:job:{job}", JobField.status) == b"queued"
            with frozen(replica), pytest.raises(BridgeUnavailable, match="0 of 1"):
                await client.submit({**OP, "idempotency_key": "async-2"})
            return await client.submit({**OP, "idempotency_key": "async-2"})

    job = asyncio.run(submit_twice())
    assert replica.client().hget(f"rep:job:{job}", JobField.status) == b"queued"
