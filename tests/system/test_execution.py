"""Execution rules end to end (spec §5): real workers, the sandbox over HTTP, Redis.

Figures that matter (achieved rate, token requests) are printed; run with
``-s`` to see them.
"""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient, InvalidOperation
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import CALLBACK_SECRET, bridge_env, settings_from, wait_finished, wait_until

PLATES = generate_fleet(42, 60).plates()


def trips(plate: str) -> dict[str, object]:
    return {  # each makes its own call (coalesce: False): these tests count calls
        "method": "GET",
        "coalesce": False,
        "path": "/Geolocation/Trips",
        "query": {"registrationNumber": plate, "startDate": "2026-11-26T00:00:00", "endDate": "2026-11-27T00:00:00"},
    }


def achieved_rate(log: list[dict[str, object]], interval: float) -> float:
    """Calls per second over the span of the run plus one slot interval (1.0 x quota = perfect).

    Slots come one every ``interval`` (window plus margin, over the limit), so n calls span
    (n - 1) intervals at best: the run's rate is n / (span + one interval).
    """
    times = sorted(float(entry["t"]) for entry in log)  # type: ignore[arg-type]
    return len(times) / (times[-1] - times[0] + interval)


def wait_all(client: BridgeClient, ids: list[str], timeout: float) -> list[str]:
    wait_finished(client, ids, timeout=timeout)
    return [client.get(i).status for i in ids]


def test_three_workers_hold_the_quota_without_a_single_429(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota="10/s")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="10/s", BRIDGE_RATE_LIMIT_MARGIN_S="0.15")
    for _ in range(3):
        workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([trips(PLATES[i % len(PLATES)]) for i in range(100)])
    assert wait_all(client, ids, timeout=60) == ["succeeded"] * 100
    stats = sb.stats()
    rate = achieved_rate(stats["log"], 1.15 / 10)
    print(
        f"\n3 workers x 4 threads, quota 10/s: {stats['accepted']} calls, {stats['rate_limited']} x 429, "
        f"max {stats['max_in_window']} in any 1 s, achieved {rate:.2f}/s = {rate / 10:.0%} of the quota"
    )
    assert stats["rate_limited"] == 0
    assert stats["accepted"] == 100
    assert stats["max_in_window"] <= 10
    assert rate >= 8.0


@pytest.mark.slow
def test_four_workers_at_the_real_quota_of_30_per_minute(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota="30/m")
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="30/m")
    for _ in range(4):
        workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([trips(PLATES[i % len(PLATES)]) for i in range(90)])  # three windows' worth
    assert wait_all(client, ids, timeout=200) == ["succeeded"] * 90
    stats = sb.stats()
    rate = achieved_rate(stats["log"], 60.25 / 30)
    print(
        f"\n4 workers, quota 30/m: {stats['accepted']} calls, {stats['rate_limited']} x 429, "
        f"max {stats['max_in_window']} in any 60 s, achieved {rate * 60:.2f}/min = {rate * 2:.1%} of the quota"
    )
    assert stats["rate_limited"] == 0
    assert stats["max_in_window"] <= 30


def test_one_token_for_everyone_and_one_more_after_revocation(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota="20/s", latency_ms=30)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="20/s", BRIDGE_RATE_LIMIT_MARGIN_S="0.15")
    first, second = workers(env, concurrency=8), workers(env, concurrency=8)
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([trips(PLATES[i % len(PLATES)]) for i in range(16)])
    assert wait_all(client, ids, timeout=30) == ["succeeded"] * 16
    assert sb.stats()["token_requests"] == 1

    more = client.submit_many([trips(PLATES[i % len(PLATES)]) for i in range(60)])
    wait_until(lambda: sb.stats()["accepted"] >= 30, what="the second batch to be under way")
    assert sb.revoke() == 1
    assert wait_all(client, more, timeout=60) == ["succeeded"] * 60
    stats = sb.stats()
    print(f"\ntoken requests: {stats['token_requests']}, 401s after revocation: {stats['unauthorized']}")
    assert stats["token_requests"] == 2
    assert stats["unauthorized"] >= 1
    assert all(client.get(i).attempts == 1 for i in more)  # a 401 is refreshed within the attempt
    assert first.process.poll() is None and second.process.poll() is None


def test_404_fails_after_one_attempt_with_a_signed_callback(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    job_id = client.submit({"method": "GET", "path": "/Vehicles/ZZ-999-ZZ", "callback": {"url": receiver.url}})
    status = client.wait(job_id, timeout=30)
    assert status.status == "failed" and status.attempts == 1
    assert status.response.status_code == 404 and status.error.kind == "http_error"
    wait_until(lambda: receiver.received, what="the callback")
    payload = Webhook(CALLBACK_SECRET).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["type"] == "operation.failed"
    assert payload["data"]["error"]["kind"] == "http_error"
    assert len([e for e in sb.stats()["log"] if e["path"] == "/Vehicles/ZZ-999-ZZ"]) == 1


def test_503_then_200_succeeds_on_the_second_attempt(redis_server, prefix, sandbox, workers, receiver):
    sb = sandbox(quota=None)
    plate = PLATES[0]
    sb.add_faults(path=f"/Vehicles/{plate}", responses=[{"status": 503}])
    env = bridge_env(redis_server.url, prefix, sb)
    workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    job_id = client.submit({"method": "GET", "path": f"/Vehicles/{plate}", "callback": {"url": receiver.url}})
    status = client.wait(job_id, timeout=30)
    assert status.status == "succeeded" and status.attempts == 2
    assert status.response.body["registrationNumber"] == plate
    wait_until(lambda: receiver.received, what="the callback")
    assert len(receiver.received) == 1
    payload = Webhook(CALLBACK_SECRET).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["type"] == "operation.succeeded" and payload["data"]["attempts"] == 2


def test_same_idempotency_key_is_one_job_and_one_call(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    operation = {**trips(PLATES[1]), "idempotency_key": "trips-once"}
    first = client.submit(operation)
    client.wait(first, timeout=30)
    second = client.submit(operation)
    both = client.submit_many([operation, operation])
    assert second == first and both == [first, first]
    assert sb.stats()["accepted"] == 1


@pytest.mark.parametrize(
    ("operation", "field"),
    [
        ({"method": "GET", "path": "https://evil.example/x"}, "path"),
        ({"method": "GET", "path": "//evil.example/x"}, "path"),
        ({"method": "GET", "path": "/a/../b"}, "path"),
        ({"method": "TRACE", "path": "/Vehicles"}, "method"),
    ],
)
def test_dangerous_operations_are_refused_before_any_network(redis_server, prefix, sandbox, workers, operation, field):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    client = BridgeClient(settings_from(env))
    with pytest.raises(InvalidOperation) as refused:
        client.submit_many([trips(PLATES[0]), operation])
    assert str(refused.value).startswith(f"operations[1].{field}:")
    assert list(redis_server.client().scan_iter(match=f"{prefix}*")) == []
    assert sb.stats()["calls"] == 0 and sb.stats()["token_requests"] == 0
