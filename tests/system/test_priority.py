"""Priority, forecasts and batches end to end (spec §10, §11): real workers, the sandbox's real quota.

Loose bounds only; the precise figures are in ``python -m bench priority``.
"""

from __future__ import annotations

import signal
from datetime import datetime

from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient
from optimum_bridge.keys import CALLBACKS_QUEUE, Keys
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import CALLBACK_SECRET, bridge_env, settings_from, wait_finished, wait_until

PLATES = generate_fleet(42, 60).plates()


def vehicle(i: int, priority: str = "normal", **extra: object) -> dict[str, object]:
    return {"method": "GET", "path": f"/Vehicles/{PLATES[i % len(PLATES)]}", "priority": priority, **extra}


def started(client: BridgeClient, job_id: str) -> datetime | None:
    return client.get(job_id).started_at


def test_an_urgent_job_meets_the_next_slot_in_a_backlog_of_100_bulk_jobs(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota="60/m")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="60/m")
    workers(env, concurrency=4)
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    client.submit_many([vehicle(i, "bulk") for i in range(100)])
    wait_until(lambda: sb.stats()["accepted"] >= 3, what="the backlog to be under way")
    urgent = client.submit(vehicle(7, "urgent"))
    begun = wait_until(lambda: started(client, urgent), timeout=10, what="the urgent job to start")
    waited = (begun - client.get(urgent).submitted_at).total_seconds()
    stats = sb.stats()
    print(f"\nurgent into 100 bulk at 60/m: started {waited:.2f}s after submission (slot interval 1.00 s)")
    assert waited <= 2.0
    assert stats["rate_limited"] == 0 and stats["max_in_window"] <= 60


def test_normal_jobs_go_before_earlier_bulk_ones(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota="5/s")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="5/s", BRIDGE_RATE_LIMIT_MARGIN_S="0.1")
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    bulk = client.submit_many([vehicle(i, "bulk") for i in range(12)])
    normal = client.submit_many([vehicle(20 + i) for i in range(3)])
    wait_finished(client, bulk + normal, timeout=60)
    order = sorted(bulk + normal, key=lambda i: client.get(i).started_at or datetime.max)
    bulk_before = order.index(normal[-1]) - 2  # bulk jobs that started before the last normal one
    stats = sb.stats()
    print(f"\n3 normal after 12 bulk: {bulk_before} bulk started before them; {stats['rate_limited']} x 429")
    assert bulk_before <= 2  # at most the slots already given when the normal ones were submitted
    assert stats["rate_limited"] == 0 and stats["max_in_window"] <= 5


def test_forecasts_hold_on_a_steady_backlog(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota="2/s")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="2/s", BRIDGE_RATE_LIMIT_MARGIN_S="0.1")
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([vehicle(i) for i in range(16)])
    estimates = {i: client.get(i).estimated_start_at for i in ids}
    wait_finished(client, ids, timeout=60)
    interval = 1.1 / 2
    errors = [abs(((client.get(i).started_at or datetime.max) - estimates[i]).total_seconds()) for i in ids]  # type: ignore[operator]
    print(f"\nforecast error on 16 jobs at 2/s: max {max(errors):.2f}s (bound {interval + 1:.2f}s)")
    assert max(errors) <= interval + 1


def batch_callbacks(receiver, batch_id: str) -> list[dict[str, object]]:
    """The verified ``batch.completed`` callbacks received for ``batch_id``."""
    found = []
    for item in receiver.received:
        event = Webhook(CALLBACK_SECRET).verify(item.body, item.headers)
        if event["type"] == "batch.completed" and event["data"]["id"] == batch_id:
            found.append(event)
    return found


def callbacks_settled(redis, prefix: str) -> bool:
    keys = Keys(prefix)
    return redis.llen(keys.queue(CALLBACKS_QUEUE)) == 0 and redis.zcard(keys.callbacks_watch) == 0


def test_one_batch_callback_when_every_job_is_final_even_a_failed_one(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota="10/s")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="10/s", BRIDGE_RATE_LIMIT_MARGIN_S="0.15")
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    ops = [vehicle(i) for i in range(9)] + [{"method": "GET", "path": "/Vehicles/ZZ-404-ZZ"}]
    batch = client.submit_batch(ops, callback={"url": receiver.url}, metadata={"run": "t1"})
    done = client.wait_batch(batch.id, timeout=60)
    assert (done.status, done.counts.succeeded, done.counts.failed) == ("done", 9, 1)
    wait_until(lambda: batch_callbacks(receiver, batch.id), timeout=30, what="the batch callback")
    wait_until(lambda: callbacks_settled(redis_server.client(), prefix), what="nothing more to deliver")
    [event] = batch_callbacks(receiver, batch.id)
    assert event["data"]["counts"]["failed"] == 1 and event["data"]["metadata"] == {"run": "t1"}
    assert receiver.received[0].headers["webhook-id"] == f"msg_batch_{batch.id}"


def test_one_batch_callback_across_a_worker_killed_mid_batch(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota="5/s", latency_ms=300)
    env = bridge_env(
        redis_server.url,
        prefix,
        sb,
        OPTIMUM_RATE_LIMIT="5/s",
        BRIDGE_RATE_LIMIT_MARGIN_S="0.1",
        BRIDGE_REDELIVERY_TIMEOUT_S="5",
    )
    victim = workers(env, concurrency=4)
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    batch = client.submit_batch([vehicle(i) for i in range(20)], callback={"url": receiver.url})
    wait_until(lambda: client.get_batch(batch.id).counts.succeeded >= 5, timeout=30, what="a quarter of the batch")
    victim.stop(signal.SIGKILL)
    done = client.wait_batch(batch.id, timeout=60)
    assert (done.status, done.counts.succeeded) == ("done", 20)
    wait_until(lambda: batch_callbacks(receiver, batch.id), timeout=30, what="the batch callback")
    wait_until(lambda: callbacks_settled(redis_server.client(), prefix), what="nothing more to deliver")
    assert len(batch_callbacks(receiver, batch.id)) == 1
    assert sb.stats()["rate_limited"] == 0
