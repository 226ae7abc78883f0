"""Redis faults and Redis set-ups: a restart mid-run with AOF, passwords, one key prefix."""

from __future__ import annotations

import redis as redis_lib

from optimum_bridge import BridgeClient
from optimum_bridge.fleet import generate_fleet

from ..conftest import bridge_env, settings_from, wait_until

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

    wait_until(finished, timeout=120, interval=0.5, what="every job to finish after the restart")
    states = [client.get(i).status for i in ids]
    stats = sb.stats()
    print(
        f"\nRedis restarted after {restarted_at} calls; {states.count('succeeded')}/60 succeeded, "
        f"{stats['accepted']} calls, {stats['rate_limited']} x 429"
    )
    assert states == ["succeeded"] * 60
    wait_until(lambda: len({r.headers["webhook-id"] for r in receiver.received}) == 60, timeout=90, what="callbacks")
    assert stats["rate_limited"] == 0


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
