"""Callback faults: a receiver that is down, dead letters and their replay, SSRF at delivery time."""

from __future__ import annotations

import json

from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient
from optimum_bridge.keys import CALLBACKS_QUEUE, Keys
from tests.support import CALLBACK_SECRET, bridge_env, run_cli, settings_from, wait_until

cli = run_cli


def test_receiver_down_dead_letters_then_replay_delivers(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_CALLBACK_SCHEDULE_S="0.2,0.4,0.8")
    workers(env, concurrency=2)
    receiver.statuses = [500] * 4  # the first delivery and its three scheduled retries all fail
    client = BridgeClient(settings_from(env))
    ids = client.submit_many(
        [
            {"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}},
            {"method": "GET", "path": "/Persons"},
        ]
    )
    for job_id in ids:
        client.wait(job_id, timeout=30)
    redis = redis_server.client()
    wait_until(lambda: redis.hlen(Keys(prefix).dead_letters) == 1, what="the dead letter")
    assert receiver.attempts == 4 and receiver.received == []

    listed = cli(env, "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    letter = json.loads(listed.stdout.strip())
    assert letter["job_id"] == ids[0] and letter["attempts"] == 4
    assert letter["reason"] == "receiver answered 500"
    assert letter["signature_scheme"] == "standard-webhooks-v1" and letter["webhook_id"] == f"msg_{ids[0]}"

    replayed = cli(env, "dead-letters", "replay")
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout
    wait_until(lambda: receiver.received, what="the replayed callback")
    payload = Webhook(CALLBACK_SECRET).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["data"]["id"] == ids[0]
    assert receiver.received[0].headers["webhook-id"] == f"msg_{ids[0]}"
    assert redis.hlen(Keys(prefix).dead_letters) == 0
    assert receiver.attempts == 5


def test_callback_to_an_internal_address_is_refused_again_at_delivery(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota=None)
    producer_env = bridge_env(redis_server.url, prefix, sb)  # the producer's check passed (as if DNS said public)
    worker_env = {**producer_env, "BRIDGE_CALLBACK_ALLOW_PRIVATE": "false"}
    workers(worker_env, concurrency=2)
    client = BridgeClient(settings_from(producer_env))
    job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
    assert client.wait(job_id, timeout=30).status == "succeeded"
    redis = redis_server.client()
    wait_until(lambda: redis.hlen(Keys(prefix).dead_letters) == 1, what="the refused callback")
    letter = json.loads(redis.hget(Keys(prefix).dead_letters, job_id))
    assert "internal address" in letter["reason"]
    assert receiver.attempts == 0


def test_without_a_callback_secret_callbacks_wait_in_the_dead_letter_list(
    redis_server, prefix, sandbox, workers, receiver
):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    worker_env = {k: v for k, v in env.items() if k != "BRIDGE_CALLBACK_SECRET"}
    worker = workers(worker_env, concurrency=2)
    client = BridgeClient(settings_from(env))
    job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
    assert client.wait(job_id, timeout=30).status == "succeeded"
    redis = redis_server.client()
    wait_until(lambda: redis.hlen(Keys(prefix).dead_letters) == 1, what="the unsigned callback to be parked")
    letter = json.loads(redis.hget(Keys(prefix).dead_letters, job_id))
    assert letter["reason"].startswith("BRIDGE_CALLBACK_SECRET")
    assert receiver.attempts == 0
    assert "BRIDGE_CALLBACK_SECRET is not set" in worker.log()
    replayed = cli(env, "dead-letters", "replay")  # after configuring the secret, an operator replays it
    assert replayed.returncode == 0 and "replayed 1" in replayed.stdout


def test_a_lost_callback_message_is_queued_again(redis_server, prefix, sandbox, workers, receiver, runtime):
    """Kombu pops a message and records it as unacked in two steps; a Redis restart in between loses it."""
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_REDELIVERY_TIMEOUT_S="5")
    settings = settings_from(env)
    # In-process, without the secret: the executor queues the callback instead of delivering it at
    # once (as one does whose first delivery went to a slow receiver).
    rt = runtime(settings.model_copy(update={"callback_secret": None}))
    client = BridgeClient(settings, client=rt.redis)
    job_id = client.submit({"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}})
    rt.dispatcher.run("default")  # in-process: the job is given a slot, then run
    assert rt.executor.run(job_id, 1, chain=False) == "succeeded"  # ... and its callback message is now queued
    keys = Keys(prefix)
    assert rt.redis.delete(keys.queue(CALLBACKS_QUEUE)) == 1  # ... and lost
    worker = workers(env, concurrency=2)
    wait_until(lambda: receiver.received, timeout=20, what="the callback to be recovered")
    payload = Webhook(CALLBACK_SECRET).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["data"]["id"] == job_id
    wait_until(lambda: rt.redis.zcard(keys.callbacks_watch) == 0, what="the watch to be cleared")
    # The worker logs the delivery just after settling it.
    wait_until(lambda: "callback delivered" in worker.log(), what="the worker to log the delivery")
    assert receiver.attempts == 1


def test_the_first_delivery_is_made_by_the_worker_that_finished_the_job(
    redis_server, prefix, sandbox, workers, receiver, runtime
):
    """Issue 17: no callback task when the receiver answers at once; one that fails goes to the delivery
    path, whose retries deliver it, signed the same way."""
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_CALLBACK_SCHEDULE_S="0.2,0.4")
    settings = settings_from(env)
    rt = runtime(settings)
    keys = Keys(prefix)
    client = BridgeClient(settings, client=rt.redis)
    op = {"method": "GET", "path": "/Vehicles", "coalesce": False, "callback": {"url": receiver.url}}
    first, second = client.submit(op), client.submit(op)
    rt.dispatcher.run("default")  # in-process: given a slot, then run here
    assert rt.executor.run(first, 1, chain=False) == "succeeded"
    # Delivered by the worker process that finished the job (one of its delivery threads) ...
    wait_until(lambda: rt.redis.hget(keys.job(first), "cb") == b"delivered", what="the first delivery")
    assert len(receiver.received) == 1 and rt.redis.zcard(keys.callbacks_watch) == 0
    assert rt.redis.llen(keys.queue(CALLBACKS_QUEUE)) == 0  # ... with no callback message queued

    receiver.statuses = [500]  # the second one's first delivery fails: its retry is the delivery path's
    wait_until(lambda: rt.dispatcher.run("default").given == 1, what="the second job's slot")
    assert rt.executor.run(second, 1, chain=False) == "succeeded"
    wait_until(lambda: rt.redis.zcard(keys.due) == 1, what="attempt 2, scheduled")
    assert receiver.attempts == 2 and len(receiver.received) == 1
    workers(env, concurrency=2)
    wait_until(lambda: len(receiver.received) == 2, timeout=20, what="the retried callback")
    for got, job_id in zip(receiver.received, (first, second), strict=True):
        payload = Webhook(CALLBACK_SECRET).verify(got.body, got.headers)
        assert payload["data"]["id"] == job_id and got.headers["webhook-id"] == f"msg_{job_id}"
    wait_until(lambda: rt.redis.hget(keys.job(second), "cb") == b"delivered", what="the delivery recorded")
    assert receiver.attempts == 3
