"""Fault injection on workers: SIGKILL mid-call, redelivered messages, far retries, SIGTERM."""

from __future__ import annotations

import signal
import time

from optimum_bridge import BridgeClient
from optimum_bridge.keys import CALLBACKS_QUEUE, DELIVER_TASK, EXECUTE_TASK, OPERATIONS_QUEUE, Keys
from optimum_bridge.process.kombu import build_message
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import bridge_env, settings_from, wait_until

PLATES = generate_fleet(42, 60).plates()


def calls_to(sb, path: str) -> int:
    return len([entry for entry in sb.stats()["log"] if entry["path"] == path])


def drained(client, prefix: str) -> bool:
    keys = Keys(prefix)
    return (
        client.llen(keys.queue(OPERATIONS_QUEUE)) == 0
        and client.llen(keys.queue(CALLBACKS_QUEUE)) == 0
        and client.hlen(f"{prefix}unacked") == 0
        and client.zcard(keys.due) == 0
    )


def test_sigkill_mid_call_loses_no_job(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota=None)
    path = f"/Vehicles/{PLATES[2]}"
    sb.add_faults(path=path, responses=[{"status": 200, "delay_ms": 20000}])  # the first call hangs
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_REDELIVERY_TIMEOUT_S="5", OPTIMUM_TIMEOUT_S="30")
    victim = workers(env, concurrency=1)
    client = BridgeClient(settings_from(env))
    job_id = client.submit({"method": "GET", "path": path, "callback": {"url": receiver.url}})
    wait_until(lambda: calls_to(sb, path) == 1, what="the call to reach the API")
    victim.stop(signal.SIGKILL)
    killed = time.monotonic()
    workers(env, concurrency=1)
    status = client.wait(job_id, timeout=30)
    rerun_after = time.monotonic() - killed
    print(f"\nSIGKILL mid-call: job re-run and finished {rerun_after:.1f}s after the kill (timeout 5s)")
    assert status.status == "succeeded"
    assert calls_to(sb, path) == 2  # the killed call, then the re-run
    assert rerun_after < 5 + 3
    wait_until(lambda: receiver.received and drained(redis_server.client(), prefix), what="the callback")
    assert len(receiver.received) == 1


def test_redelivered_messages_of_a_finished_job_do_nothing(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota=None)
    path = f"/Vehicles/{PLATES[3]}"
    env = bridge_env(redis_server.url, prefix, sb)
    worker = workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    job_id = client.submit({"method": "GET", "path": path, "callback": {"url": receiver.url}})
    client.wait(job_id, timeout=30)
    wait_until(lambda: receiver.received, what="the callback")
    redis = redis_server.client()
    keys = Keys(prefix)
    for _ in range(2):  # what a visibility-timeout redelivery or a crash after the answer looks like
        redis.lpush(keys.queue(OPERATIONS_QUEUE), build_message(EXECUTE_TASK, [job_id], queue=OPERATIONS_QUEUE))
        redis.lpush(keys.queue(CALLBACKS_QUEUE), build_message(DELIVER_TASK, [job_id, 1], queue=CALLBACKS_QUEUE))
    wait_until(
        lambda: worker.log().count("'final'") == 2 and worker.log().count("'duplicate'") == 2,
        what="the duplicates to be consumed",
    )
    assert calls_to(sb, path) == 1
    assert len(receiver.received) == 1
    assert client.get(job_id).attempts == 1


def test_a_retry_far_beyond_the_redelivery_timeout_runs_once(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota=None)
    path = f"/Vehicles/{PLATES[4]}"
    sb.add_faults(path=path, responses=[{"status": 503}])
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_REDELIVERY_TIMEOUT_S="5", BRIDGE_RETRY_BASE_S="12")
    workers(env, concurrency=2)
    workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    job_id = client.submit({"method": "GET", "path": path, "callback": {"url": receiver.url}})
    wait_until(lambda: client.get(job_id).status == "retrying", what="the job to wait for its retry")
    redis = redis_server.client()
    assert redis.zcard(Keys(prefix).delayed()) == 1  # parked in its account's delayed set, not held as an ETA message
    assert redis.hlen(f"{prefix}unacked") == 0
    status = client.wait(job_id, timeout=40)
    assert status.status == "succeeded" and status.attempts == 2
    wait_until(lambda: receiver.received and drained(redis, prefix), what="the callback")
    assert calls_to(sb, path) == 2
    assert len(receiver.received) == 1


def test_sigterm_finishes_in_flight_calls_and_leaves_the_queue(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota=None, latency_ms=1500)
    env = bridge_env(redis_server.url, prefix, sb)
    worker = workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([{"method": "GET", "path": f"/Vehicles/{plate}"} for plate in PLATES[:10]])
    wait_until(lambda: sb.stats()["calls"] >= 2, what="two calls in flight")
    started = time.monotonic()
    assert worker.stop(signal.SIGTERM, timeout=30) == 0
    stopped_in = time.monotonic() - started
    states = [client.get(i).status for i in ids]
    print(f"\nSIGTERM: worker stopped in {stopped_in:.1f}s; states {sorted(states)}")
    assert states.count("succeeded") == sb.stats()["calls"] == 2  # in-flight calls finished, nothing else started
    redis = redis_server.client()
    keys = Keys(prefix)
    waiting = sum(redis.zcard(lane) for lane in keys.lanes()) + redis.zcard(keys.dispatched)
    assert waiting == 8  # the rest waits for its slot (in its lane, or handed off but not started)
    workers(env, concurrency=4)
    wait_until(lambda: all(client.get(i).status == "succeeded" for i in ids), timeout=60, what="the rest to run")
    assert sb.stats()["calls"] == 10
