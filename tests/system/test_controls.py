"""Controls over waiting work (spec §11a): cancel, move to another lane, not before; and their races."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient
from optimum_bridge.errors import NotWaiting
from optimum_bridge.keys import Keys
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.integration.test_scheduler import dispatched_order, op, sched  # noqa: F401  (the fixture)
from tests.support import CALLBACK_SECRET, bridge_env, settings_from, wait_until
from tests.system.test_ingress import ingress  # noqa: F401  (the fixture)

PLATES = generate_fleet(42, 60).plates()


def calls_to(sb, path: str) -> int:
    return len([e for e in sb.stats()["log"] if e["path"] == path])


def test_a_waiting_job_is_cancelled_without_a_call_and_calls_back_cancelled(sched):  # noqa: F811
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    job_id = client.submit({**op("/Vehicles"), "callback": {"url": "http://127.0.0.1:9/hook"}})
    status = client.cancel(job_id)
    assert status.status == "cancelled" and status.finished_at is not None and status.position is None
    assert rt.redis.zcard(keys.lane("normal")) == 0
    assert rt.redis.zscore(keys.callbacks_watch, job_id) is not None  # its operation.cancelled callback
    assert rt.dispatcher.run("default").given == 0
    fields = rt.jobs.fields(job_id)
    _, body = rt.callbacks.event(job_id, fields)
    assert b'"type":"operation.cancelled"' in body
    with pytest.raises(NotWaiting):
        client.cancel(job_id)


def test_a_job_handed_to_a_worker_but_not_started_is_cancelled_and_its_message_does_nothing(sched):  # noqa: F811
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    job_id = client.submit(op("/Vehicles"))
    rt.dispatcher.run("default")
    assert client.cancel(job_id).status == "cancelled"
    assert rt.executor.run(job_id, 1, chain=False) == "final"


def race(rt, client: BridgeClient, job_id: str, *, head_start_s: float) -> bool:
    """The scheduler and a worker start the job while, ``head_start_s`` later, a cancel lands; whether it won."""
    start = threading.Barrier(2)
    won: list[bool] = []

    def worker() -> None:
        start.wait()
        rt.dispatcher.run("default")
        rt.executor.run(job_id, 1, chain=False)

    def canceller() -> None:
        start.wait()
        time.sleep(head_start_s)  # where the cancel lands in the worker's steps (not a synchronisation)
        try:
            client.cancel(job_id)
            won.append(True)
        except NotWaiting:
            won.append(False)

    threads = [threading.Thread(target=worker), threading.Thread(target=canceller)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return won[0]


def test_cancel_and_the_slot_race_one_wins_never_both(redis_server, prefix, sandbox, runtime):
    """A cancel lands while the scheduler gives the job its slot and a worker starts it: the job
    is either cancelled with no call, or it runs and the cancel answers 409, never both."""
    sb = sandbox(quota=None)
    settings = settings_from(
        bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    )
    rt = runtime(settings)
    client = BridgeClient(settings, client=rt.redis)
    outcomes = {"cancelled": 0, "ran": 0}
    for i in range(30):
        path = f"/Vehicles/{PLATES[i]}"
        job_id = client.submit({"method": "GET", "path": path})
        cancelled = race(rt, client, job_id, head_start_s=random.uniform(0, 0.004))
        final = client.get(job_id).status
        if cancelled:
            assert final == "cancelled" and calls_to(sb, path) == 0
            outcomes["cancelled"] += 1
        else:
            assert final == "succeeded" and calls_to(sb, path) == 1
            outcomes["ran"] += 1
    print(f"\n30 races of cancel against the slot: {outcomes}")


def test_a_waiting_job_moves_to_another_lane_keeping_its_age(sched):  # noqa: F811
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    first, second = client.submit_many([op("/Vehicles/A", "bulk"), op("/Vehicles/B", "bulk")])
    urgent = client.submit(op("/Vehicles/U", "urgent"))
    moved = client.reprioritize(second, "urgent")
    assert moved.priority == "urgent" and moved.position == 0  # older than the urgent one: it goes first
    rt.dispatcher.run("default")
    assert dispatched_order(rt) == [second, urgent, first]
    rt.executor.run(second, 1, chain=False)
    with pytest.raises(NotWaiting):
        client.reprioritize(second, "bulk")


def test_not_before_holds_a_job_and_its_forecast(sched):  # noqa: F811
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    keys = Keys(rt.settings.key_prefix)
    later = datetime.now(UTC) + timedelta(seconds=1.5)
    job_id = client.submit({**op("/Vehicles"), "not_before": later.isoformat()})
    status = client.get(job_id)
    assert status.estimated_start_at is not None and status.estimated_start_at >= later - timedelta(milliseconds=5)
    assert rt.dispatcher.run("default").given == 0
    wait_until(lambda: rt.dispatcher.run("default").given == 1, timeout=5, what="the job's time")
    assert datetime.now(UTC) >= later
    assert rt.redis.zscore(keys.dispatched, job_id) is not None


def test_not_before_is_rounded_up_to_the_millisecond(sched):  # noqa: F811
    # Lanes keep milliseconds: rounding down let a job start up to 1 ms early (seen in CI).
    rt, client = sched(OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    later = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=917_001)
    job_id = client.submit({**op("/Vehicles"), "not_before": later.isoformat()})
    score = rt.redis.zscore(Keys(rt.settings.key_prefix).delayed(), job_id)
    assert score == int(later.replace(microsecond=0).timestamp()) * 1000 + 918


def test_cancelling_a_batch_mid_drain_stops_its_calls_and_it_completes_once(
    redis_server, prefix, sandbox, workers, receiver
):
    sb = sandbox(quota="5/s")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="5/s", BRIDGE_RATE_LIMIT_MARGIN_S="0.1")
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    ops = [{"method": "GET", "path": f"/Vehicles/{PLATES[i]}", "callback": {"url": receiver.url}} for i in range(30)]
    batch = client.submit_batch(ops, callback={"url": receiver.url})
    wait_until(lambda: client.get_batch(batch.id).counts.succeeded >= 5, timeout=30, what="the batch under way")
    status = client.cancel_batch(batch.id)
    calls_at_cancel = sb.stats()["accepted"]
    done = client.wait_batch(batch.id, timeout=30)
    calls = sb.stats()["accepted"]
    print(f"\nbatch of 30 cancelled after {calls_at_cancel} calls: {calls} in all; {done.counts}")
    assert status.counts.cancelled >= 20
    assert calls - calls_at_cancel <= 2  # only calls already under way finish
    assert done.status == "done" and done.counts.cancelled + done.counts.succeeded == 30

    def events() -> list[dict[str, object]]:
        return [Webhook(CALLBACK_SECRET).verify(r.body, r.headers) for r in receiver.received]

    wait_until(lambda: len(events()) == 31, timeout=30, what="30 job callbacks and the batch's")
    kinds = sorted(str(e["type"]) for e in events())
    assert kinds.count("batch.completed") == 1
    assert kinds.count("operation.cancelled") == done.counts.cancelled


def test_controls_over_http_and_the_cli(redis_server, prefix, sandbox, ingress):  # noqa: F811
    from tests.support import run_cli
    from tests.system.test_ingress import AUTH, local_settings

    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_API_KEYS="key-one,key-two")
    settings = local_settings(redis_server.url, prefix)
    http = ingress(settings)
    client = BridgeClient(settings)
    job_id, other = client.submit_many([op("/Vehicles", "bulk"), op("/Persons")])
    moved = http.patch(f"/v1/operations/{job_id}", json={"priority": "urgent"}, headers=AUTH)
    assert moved.status_code == 200 and moved.json()["priority"] == "urgent"
    bad = http.patch(f"/v1/operations/{job_id}", json={"priority": "asap"}, headers=AUTH)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "priority"
    gone = http.delete(f"/v1/operations/{job_id}", headers=AUTH)
    assert gone.status_code == 200 and gone.json()["status"] == "cancelled"
    again = http.delete(f"/v1/operations/{job_id}", headers=AUTH)
    assert again.status_code == 409 and "not cancelled" in again.json()["detail"]
    assert http.delete("/v1/operations/0123abcd", headers=AUTH).status_code == 404
    assert http.delete(f"/v1/operations/{other}").status_code == 401
    batch = client.submit_batch([op("/Vehicles"), op("/Persons")])
    cancelled = http.delete(f"/v1/batches/{batch.id}", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["counts"]["cancelled"] == 2
    assert cancelled.json()["status"] == "done"
    by_cli = run_cli(env, "move", other, "urgent")
    assert by_cli.returncode == 0 and '"priority": "urgent"' in by_cli.stdout
    assert run_cli(env, "move", other, "asap").returncode == 2
    by_cli = run_cli(env, "cancel", other)
    assert by_cli.returncode == 0 and '"status": "cancelled"' in by_cli.stdout
    refused = run_cli(env, "cancel", other)
    assert refused.returncode == 1 and refused.stderr.strip().endswith("is finished: not cancelled")
    unmoved = run_cli(env, "move", other, "bulk")
    assert unmoved.returncode == 1 and unmoved.stderr.strip().endswith("is finished: not moved")
