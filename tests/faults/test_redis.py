"""Redis faults and Redis set-ups: a restart mid-run with AOF, passwords, one key prefix."""

from __future__ import annotations

import contextlib

import redis as redis_lib

from optimum_bridge import BridgeClient
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import bridge_env, settings_from, wait_until

from .redis_proxy import CuttingProxy

PLATES = generate_fleet(42, 60).plates()


def test_redis_restart_mid_run_loses_no_job(private_redis, sandbox, workers, receiver):
    server = private_redis("--appendonly", "yes", "--appendfsync", "always")
    sb = sandbox(quota="10/s")
    env = bridge_env(
        server.url,
        "r:",
        sb,
        OPTIMUM_RATE_LIMIT="10/s",
        BRIDGE_RATE_LIMIT_MARGIN_S="0.15",
        BRIDGE_REDELIVERY_TIMEOUT_S="10",
    )
    workers(env, concurrency=4)
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    ops = [
        {"method": "GET", "path": f"/Vehicles/{PLATES[i % 50]}", "callback": {"url": receiver.url}} for i in range(60)
    ]
    ids = client.submit_many(ops)
    wait_until(lambda: sb.stats()["accepted"] >= 15, what="the run to be under way")
    server.restart()
    restarted_at = sb.stats()["accepted"]

    def finished() -> bool:
        try:
            return all(client.get(i).finished for i in ids)
        except redis_lib.ConnectionError:
            return False

    try:
        wait_until(finished, timeout=120, interval=0.5, what="every job to finish after the restart")
    except AssertionError:
        stuck = {i: client.get(i).status for i in ids if not client.get(i).finished}
        admin = server.client()
        queues = {k.decode(): admin.type(k).decode() for k in admin.scan_iter(match="r:*") if b"job" not in k}
        raise AssertionError(f"unfinished jobs {stuck}; keys {queues}; {sb.stats()['accepted']} calls") from None
    states = [client.get(i).status for i in ids]
    stats = sb.stats()
    print(
        f"\nRedis restarted after {restarted_at} calls; {states.count('succeeded')}/60 succeeded, "
        f"{stats['accepted']} calls, {stats['rate_limited']} x 429"
    )
    assert states == ["succeeded"] * 60
    wait_until(lambda: len({r.headers["webhook-id"] for r in receiver.received}) == 60, timeout=90, what="callbacks")
    assert stats["rate_limited"] == 0


def run_through_cutting_proxy(redis_server, prefix, sandbox, workers, receiver, *, drop_reply: bool):
    """One job; the worker's broker is cut right after Redis pops the job's message. Returns
    (final status, worker log, sandbox)."""
    sb = sandbox(quota=None)
    proxy = CuttingProxy(redis_server.port, outage_s=1.0, drop_reply=drop_reply)
    worker = None
    stack = contextlib.ExitStack()
    try:
        worker_env = bridge_env(proxy.url, prefix, sb, BRIDGE_REDELIVERY_TIMEOUT_S="30")
        worker = workers(worker_env, concurrency=2)
        client = BridgeClient(settings_from(bridge_env(redis_server.url, prefix, sb)))  # producer: straight to Redis
        stack.callback(client.close)
        proxy.armed.set()
        job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
        wait_until(proxy.cut.is_set, what="the proxy to cut the broker right after the pop")
        status = client.wait(job_id, timeout=30)
        if status.status == "succeeded":
            wait_until(lambda: receiver.received, what="the callback")
        return status, worker.log(), sb
    finally:
        if worker is not None:
            worker.stop()  # while the proxy still carries its connections
        proxy.close()
        stack.close()


def test_broker_lost_between_pop_and_unacked_record_loses_no_job(redis_server, prefix, sandbox, workers, receiver):
    """Kombu pops with BRPOP, then records the message as unacked in a second round trip; the
    broker goes away in between. The worker must hold on to the message until Redis is back."""
    status, log, sb = run_through_cutting_proxy(redis_server, prefix, sandbox, workers, receiver, drop_reply=False)
    assert status.status == "succeeded", f"job {status.status}: the popped message was lost"
    assert "broker unreachable while recording the message" in log  # written after the outage, not before
    assert "not recorded as unacknowledged" not in log
    assert "back in its lane" not in log  # the job recovery found nothing to do
    assert sb.stats()["accepted"] == 1 and receiver.attempts == 1


def test_a_reply_lost_with_the_connection_is_queued_again(redis_server, prefix, sandbox, workers, receiver):
    """Redis popped the message, but its reply died with the connection: the job, given its slot but
    never taken by a worker, goes back to its lane when its hand-off deadline passes, and runs once."""
    status, log, sb = run_through_cutting_proxy(redis_server, prefix, sandbox, workers, receiver, drop_reply=True)
    assert status.status == "succeeded", f"job {status.status}: nothing gave it a slot again"
    assert "its message was not taken by a worker in time; back in its lane" in log
    assert sb.stats()["accepted"] == 1 and receiver.attempts == 1


def test_password_protected_redis_and_everything_under_one_prefix(private_redis, sandbox, workers, receiver):
    server = private_redis("--requirepass", "redis-pass-123")
    url = f"redis://:redis-pass-123@127.0.0.1:{server.port}/0"
    sb = sandbox(quota=None)
    env = bridge_env(url, "acme:", sb)
    workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
    assert client.wait(job_id, timeout=30).status == "succeeded"
    wait_until(lambda: receiver.received, what="the callback")
    admin = redis_lib.Redis(port=server.port, password="redis-pass-123")
    keys = sorted(k.decode() for k in admin.scan_iter(count=1000))
    assert keys, "the run wrote nothing?"
    assert [k for k in keys if not k.startswith("acme:")] == []
