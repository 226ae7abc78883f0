"""Identical reads share one call (spec §13): followers, cached answers, priorities, cancels.

Most tests run the executor in-process (``test_executor.run``) against the
sandbox, counting the calls it received; one runs real workers and verifies
every callback with ``standardwebhooks``.
"""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient
from optimum_bridge.errors import NotWaiting
from optimum_bridge.ingress.health import render_metrics
from optimum_bridge.jobs.coalesce import read_digest
from optimum_bridge.keys import CALLBACKS_QUEUE, Keys
from optimum_bridge.sandbox.fleet import generate_fleet
from optimum_bridge.schemas import Operation
from tests.integration.test_executor import PERSON
from tests.support import CALLBACK_SECRET, bridge_env, calls_to, run, settings_from, wait_finished, wait_until

PLATE = generate_fleet(42, 60).plates()[3]
VEHICLE = {"method": "GET", "path": f"/Vehicles/{PLATE}"}


def op(**fields: object) -> Operation:
    return Operation.model_validate({"method": "GET", "path": "/Vehicles", **fields})


# -- what counts as the same read ------------------------------------------------------------------


def test_the_same_read_whatever_the_query_order():
    a = op(path="/Geolocation/Trips", query={"startDate": "2026-11-01", "endDate": "2026-11-02", "all": True})
    b = op(path="/Geolocation/Trips", query={"all": "true", "endDate": "2026-11-02", "startDate": "2026-11-01"})
    assert read_digest(a) == read_digest(b) is not None


def test_a_path_in_another_case_is_another_read():
    # Route words ignore case in ASP.NET, but a value in the path (a name, an id) reaches the API as sent.
    assert read_digest(op(path="/Persons/search/Smith")) != read_digest(op(path="/Persons/search/smith"))


@pytest.mark.parametrize(
    "other",
    [
        {"query": {"registrationNumber": "AB-123-CD"}},
        {"query": {"a": [1, 2]}},
        {"path": "/Persons"},
    ],
)
def test_a_different_query_or_path_is_another_read(other):
    assert read_digest(op(query={"a": [2, 1]})) != read_digest(op(**other))


def test_writes_and_reads_with_a_not_before_make_their_own_call():
    assert read_digest(Operation.model_validate(PERSON)) is None
    assert read_digest(op(not_before="2030-01-01T00:00:00Z")) is None


def test_max_age_is_for_reads_only():
    with pytest.raises(ValidationError, match="max_age_s applies to a GET only"):
        Operation.model_validate({**PERSON, "max_age_s": 30})
    with pytest.raises(ValidationError):
        op(max_age_s=-1)


# -- in-process: the calls the sandbox received ----------------------------------------------------


def test_identical_reads_waiting_together_make_one_call(bridge):
    rt, client, sb = bridge()
    ids = client.submit_many([VEHICLE] * 5)
    assert run(rt, ids[0]) == "succeeded"
    statuses = [client.get(i) for i in ids]
    assert calls_to(sb, VEHICLE["path"]) == 1
    assert [s.status for s in statuses] == ["succeeded"] * 5
    assert {s.coalesced_with for s in statuses[1:]} == {ids[0]} and statuses[0].coalesced_with is None
    assert all(s.response == statuses[0].response for s in statuses)
    assert [s.attempts for s in statuses] == [1, 0, 0, 0, 0]
    assert len({s.id for s in statuses}) == 5


def test_a_read_after_the_call_finished_makes_a_new_call(bridge):
    rt, client, sb = bridge()
    first = client.submit(VEHICLE)
    assert run(rt, first) == "succeeded"
    second = client.submit(VEHICLE)
    assert run(rt, second) == "succeeded"
    assert calls_to(sb, VEHICLE["path"]) == 2 and client.get(second).coalesced_with is None


def test_max_age_takes_a_fresh_answer_without_a_call(bridge):
    rt, client, sb = bridge()
    first = client.submit(VEHICLE)
    assert run(rt, first) == "succeeded"
    cached = client.submit({**VEHICLE, "max_age_s": 60})
    status = client.get(cached)
    assert status.status == "succeeded" and status.coalesced_with == first
    assert status.response == client.get(first).response and status.attempts == 0
    assert calls_to(sb, VEHICLE["path"]) == 1


def test_max_age_refuses_an_answer_older_than_it(bridge):
    rt, client, sb = bridge()
    first = client.submit(VEHICLE)
    assert run(rt, first) == "succeeded"
    keys = Keys(rt.settings.key_prefix)
    fresh = keys.fresh("default", read_digest(Operation.model_validate(VEHICLE)))
    rt.redis.set(fresh, f"{first}:{int(rt.redis.time()[0]) * 1000 - 120_000}")  # that answer is 2 minutes old
    later = client.submit({**VEHICLE, "max_age_s": 60})
    assert client.get(later).status == "queued"
    assert run(rt, later) == "succeeded" and calls_to(sb, VEHICLE["path"]) == 2


def test_coalesce_false_makes_its_own_call(bridge):
    rt, client, sb = bridge()
    ids = client.submit_many([VEHICLE, {**VEHICLE, "coalesce": False}])
    assert run(rt, ids[0]) == "succeeded" and run(rt, ids[1]) == "succeeded"
    assert calls_to(sb, VEHICLE["path"]) == 2 and client.get(ids[1]).coalesced_with is None


def test_identical_posts_each_make_their_call(bridge):
    rt, client, sb = bridge()
    ids = client.submit_many([PERSON] * 3)
    assert [run(rt, i) for i in ids] == ["succeeded"] * 3
    assert calls_to(sb, "/Persons") == 3


def test_a_failed_shared_call_fails_every_job_that_joined_it(bridge):
    rt, client, sb = bridge()
    missing = {"method": "GET", "path": "/Vehicles/NO-SUCH-CAR"}
    ids = client.submit_many([missing] * 3)
    assert run(rt, ids[0]) == "failed"
    statuses = [client.get(i) for i in ids]
    assert [s.status for s in statuses] == ["failed"] * 3
    assert all(s.response.status_code == 404 for s in statuses)
    assert calls_to(sb, missing["path"]) == 1
    # A failure is nobody's fresh answer.
    later = client.submit({**missing, "max_age_s": 60})
    assert client.get(later).status == "queued"


def test_a_newer_failed_read_makes_the_older_answer_stale(bridge):
    rt, client, sb = bridge()
    first = client.submit(VEHICLE)
    assert run(rt, first) == "succeeded"
    sb.add_faults(path=VEHICLE["path"], responses=[{"status": 404}])
    second = client.submit(VEHICLE)
    assert run(rt, second) == "failed"
    later = client.submit({**VEHICLE, "max_age_s": 60})
    assert client.get(later).status == "queued"  # the 200 before the 404 is not handed out


def test_an_urgent_read_lifts_the_bulk_call_it_joins(bridge):
    rt, client, _ = bridge()
    keys = Keys(rt.settings.key_prefix)
    leader = client.submit({**VEHICLE, "priority": "bulk"})
    follower = client.submit({**VEHICLE, "priority": "urgent"})
    assert client.get(follower).coalesced_with == leader
    assert rt.redis.zscore(keys.lane("urgent"), leader) is not None
    assert rt.redis.zscore(keys.lane("bulk"), leader) is None
    assert rt.redis.zscore(keys.lane("urgent"), follower) is None  # it waits on the leader's call
    assert client.get(leader).priority == "bulk"  # what it was submitted with; its call is urgent
    assert client.get(leader).position == 0


def test_the_lift_ends_with_the_follower_that_caused_it(bridge):
    rt, client, _ = bridge()
    keys = Keys(rt.settings.key_prefix)
    leader = client.submit({**VEHICLE, "priority": "bulk"})
    urgent = client.submit({**VEHICLE, "priority": "urgent"})
    normal = client.submit({**VEHICLE, "priority": "normal"})
    client.cancel(urgent)
    assert rt.redis.zscore(keys.lane("normal"), leader) is not None  # the highest still waiting on it
    client.reprioritize(normal, "bulk")
    assert rt.redis.zscore(keys.lane("bulk"), leader) is not None
    assert [rt.redis.zcard(keys.lane(p)) for p in ("urgent", "normal", "bulk")] == [0, 0, 1]


def test_moving_a_call_down_keeps_it_at_its_followers_priority(bridge):
    rt, client, _ = bridge()
    keys = Keys(rt.settings.key_prefix)
    leader = client.submit(VEHICLE)
    client.submit({**VEHICLE, "priority": "urgent"})
    client.reprioritize(leader, "bulk")
    assert rt.redis.zscore(keys.lane("urgent"), leader) is not None
    assert client.get(leader).priority == "bulk"


def test_a_call_outlives_every_job_waiting_on_it(bridge):
    rt, client, _ = bridge()
    keys = Keys(rt.settings.key_prefix)
    leader = client.submit(VEHICLE)
    rt.redis.expire(keys.job(leader), 60)  # as if submitted long ago
    follower = client.submit(VEHICLE)
    assert rt.redis.ttl(keys.job(leader)) >= rt.redis.ttl(keys.job(follower)) - 1


def test_a_call_takes_at_most_a_hundred_followers(bridge):
    _, client, _ = bridge()
    ids = client.submit_many([VEHICLE] * 102)
    leaders = [i for i in ids if client.get(i).coalesced_with is None]
    assert leaders == [ids[0], ids[101]]  # the 102nd read leads a call of its own


def test_a_waiting_follower_moved_to_urgent_lifts_its_call(bridge):
    rt, client, _ = bridge()
    keys = Keys(rt.settings.key_prefix)
    leader, follower = client.submit_many([{**VEHICLE, "priority": "bulk"}] * 2)
    client.reprioritize(follower, "urgent")
    assert rt.redis.zscore(keys.lane("urgent"), leader) is not None
    assert client.get(follower).priority == "urgent"


def test_a_cancelled_leader_hands_its_call_to_the_oldest_follower(bridge):
    rt, client, sb = bridge()
    keys = Keys(rt.settings.key_prefix)
    bulk, normal = {**VEHICLE, "priority": "bulk"}, {**VEHICLE, "priority": "normal"}
    leader, heir, third = client.submit_many([bulk, bulk, normal])
    assert client.cancel(leader).status == "cancelled"
    assert client.get(heir).coalesced_with is None and client.get(third).coalesced_with == heir
    assert rt.redis.zscore(keys.lane("normal"), heir) is not None  # lifted by the normal job waiting on it
    late = client.submit(VEHICLE)
    assert client.get(late).coalesced_with == heir  # new identical reads join the heir
    assert run(rt, heir) == "succeeded"
    assert [client.get(i).status for i in (leader, heir, third, late)] == ["cancelled", *["succeeded"] * 3]
    assert calls_to(sb, VEHICLE["path"]) == 1


def test_followers_handed_to_an_heir_are_finished_with_its_call(bridge):
    rt, client, sb = bridge()
    leader, heir, third = client.submit_many([VEHICLE] * 3)
    assert client.cancel(leader).status == "cancelled"
    assert run(rt, heir) == "succeeded"
    assert client.get(third).status == "succeeded" and client.get(third).coalesced_with == heir
    assert calls_to(sb, VEHICLE["path"]) == 1


def test_a_cancelled_follower_leaves_the_call_to_the_others(bridge):
    rt, client, sb = bridge()
    leader, follower = client.submit_many([VEHICLE] * 2)
    assert client.cancel(follower).status == "cancelled"
    assert client.get(follower).coalesced_with is None
    assert run(rt, leader) == "succeeded"
    assert client.get(follower).status == "cancelled" and calls_to(sb, VEHICLE["path"]) == 1


def test_a_follower_runs_with_its_call_and_can_no_longer_be_cancelled_or_moved(bridge):
    rt, client, sb = bridge({"latency_ms": 1500})
    leader, follower = client.submit_many([VEHICLE] * 2)
    outcome: list[str] = []
    call = threading.Thread(target=lambda: outcome.append(run(rt, leader)))
    call.start()
    try:
        wait_until(lambda: sb.stats()["log"], timeout=10, what="the shared call to reach the API")
        shown = client.get(follower)
        assert shown.status == "running" and shown.started_at == client.get(leader).started_at is not None
        assert shown.position is None and shown.estimated_start_at is None
        with pytest.raises(NotWaiting, match="running"):
            client.cancel(follower)
        with pytest.raises(NotWaiting, match="running"):
            client.reprioritize(follower, "urgent")
    finally:
        call.join(timeout=30)
    assert outcome == ["succeeded"] and client.get(follower).status == "succeeded"
    assert calls_to(sb, VEHICLE["path"]) == 1


def test_a_follower_is_forecast_to_start_with_its_call(bridge):
    _, client, _ = bridge()
    client.submit_many([{**VEHICLE, "path": "/Vehicles", "query": {"n": i}} for i in range(3)])
    leader, follower = client.submit_many([VEHICLE] * 2)
    assert client.get(follower).position == client.get(leader).position == 3
    gap = client.get(follower).estimated_start_at - client.get(leader).estimated_start_at
    assert abs(gap.total_seconds()) < 1  # read one after the other: the estimate moves by the time between


def test_a_follower_in_a_batch_counts_when_its_call_finishes(bridge):
    rt, client, _ = bridge()
    batch = client.submit_batch([VEHICLE] * 3)
    ids = client.batch_jobs(batch.id)
    assert run(rt, ids[0]) == "succeeded"
    done = client.get_batch(batch.id)
    assert done.status == "done" and done.counts.succeeded == 3


# -- real workers, real callbacks ------------------------------------------------------------------


def test_eight_concurrent_identical_reads_make_one_call_and_eight_callbacks(
    redis_server, prefix, sandbox, workers, receiver
):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    client = BridgeClient(settings_from(env))
    read = {**VEHICLE, "callback": {"url": receiver.url}}
    ids: list[str] = []
    start = threading.Barrier(8)

    def submit() -> None:
        start.wait()
        ids.append(client.submit(read))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(ids) == 8
    workers(env, concurrency=4)  # only now: all eight wait together
    wait_finished(client, ids, timeout=60)
    statuses = [client.get(i) for i in ids]
    assert [s.status for s in statuses] == ["succeeded"] * 8
    leaders = [s.id for s in statuses if s.coalesced_with is None]
    assert len(leaders) == 1 and all(s.coalesced_with in (None, leaders[0]) for s in statuses)
    assert calls_to(sb, VEHICLE["path"]) == 1
    wait_until(lambda: len(receiver.received) >= 8, timeout=30, what="eight callbacks")
    webhook = Webhook(CALLBACK_SECRET)
    delivered = sorted(webhook.verify(r.body, r.headers)["data"]["id"] for r in receiver.received)
    assert delivered == sorted(ids)  # one verified callback each, none twice
    assert redis_server.client().llen(Keys(prefix).queue(CALLBACKS_QUEUE)) == 0
    # A fresh answer taken at submission: no call, and its callback all the same.
    cached = client.submit({**read, "max_age_s": 60})
    assert client.get(cached).status == "succeeded"
    wait_until(lambda: len(receiver.received) >= 9, timeout=30, what="the cached answer's callback")
    assert webhook.verify(receiver.received[8].body, receiver.received[8].headers)["data"]["id"] == cached
    assert calls_to(sb, VEHICLE["path"]) == 1


def test_calls_saved_are_counted_by_account_and_how(bridge):
    rt, client, _ = bridge()
    first, _shared, cancelled = client.submit_many([VEHICLE] * 3)
    client.cancel(cancelled)  # it saved nothing
    assert run(rt, first) == "succeeded"
    client.submit({**VEHICLE, "max_age_s": 60})
    metrics = render_metrics(rt.redis, Keys(rt.settings.key_prefix), ["default"]).decode()
    assert 'optimum_bridge_account_calls_saved_total{account="default",how="shared"} 1.0' in metrics
    assert 'optimum_bridge_account_calls_saved_total{account="default",how="cached"} 1.0' in metrics


def test_a_batch_answered_from_fresh_reads_is_done_when_sealed(bridge):
    rt, client, sb = bridge()
    first = client.submit(VEHICLE)
    assert run(rt, first) == "succeeded"
    batch = client.submit_batch([{**VEHICLE, "max_age_s": 60}] * 2)
    done = client.get_batch(batch.id)
    assert done.status == "done" and done.counts.succeeded == 2
    assert calls_to(sb, VEHICLE["path"]) == 1


def test_callbacks_of_many_cached_answers_are_queued_without_waiting_for_later_sweeps(bridge):
    rt, client, _ = bridge()
    first = client.submit(VEHICLE)
    assert run(rt, first) == "succeeded"
    cached = {**VEHICLE, "max_age_s": 60, "callback": {"url": "http://127.0.0.1:9/hook"}}
    client.submit_batch([cached] * 250)
    queue = Keys(rt.settings.key_prefix).queue(CALLBACKS_QUEUE)
    turns = [(rt.deliveries.sweep(), rt.redis.llen(queue)) for _ in range(3)]
    assert turns == [(0.0, 100), (0.0, 200), (2.0, 250)]  # a full page asks for the next at once


def test_a_follower_without_a_callback_gets_none_whatever_its_metadata(bridge):
    rt, client, _ = bridge()
    leader, follower = client.submit_many([VEHICLE, {**VEHICLE, "metadata": {"callback": {"url": "x"}}}])
    assert run(rt, leader) == "succeeded"
    assert rt.jobs.field(follower, "cb") is None  # nothing to deliver: no callback was asked for
    assert client.cancel(client.submit({**PERSON, "metadata": {"callback": 1}})).status == "cancelled"
    assert rt.redis.zcard(Keys(rt.settings.key_prefix).callbacks_watch) == 0
