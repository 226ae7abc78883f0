"""What finishing a job reads (issue 17): ``complete.lua`` skips what cannot be there.

No worker process: jobs are claimed and finished through the runtime's ``JobStore`` against the
test's Redis (as ``test_take_next.py`` does), and the commands a finish ran are read from the
server's own counters (``INFO commandstats``; the tests of one session run one at a time).
"""

from __future__ import annotations

from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.keys import JobField, Keys, text
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.quota.rate import Quota, RateLimit
from optimum_bridge.schemas import ApiResponse
from tests.support import give_slot

QUOTA = Quota.of(RateLimit(100, 1.0), margin_s=0.0)
ENV = {"BRIDGE_RATE_BURST": "100"}
CALLBACK = {"url": "http://127.0.0.1:9/hook"}


def claimed(rt: Runtime, client: BridgeClient, operation: dict[str, Any]) -> str:
    job_id = client.submit(operation)
    assert (
        rt.jobs.claim(job_id, give_slot(rt, job_id), "w1", quota=QUOTA, account="default", lease_ms=5000).outcome
        == "ok"
    )
    return job_id


def commands(rt: Runtime) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in rt.redis.info("commandstats").items()}


def finish_counting(rt: Runtime, job_id: str, **options: Any) -> tuple[Any, dict[str, int]]:
    """Finish ``job_id`` as succeeded; returns the completion and the commands it ran, by name."""
    before = commands(rt)
    done = rt.jobs.finish(
        job_id, "w1", succeeded=True, response=ApiResponse(status_code=200, body=[]), error=None, **options
    )
    after = commands(rt)
    return done, {name: n - before.get(name, 0) for name, n in after.items() if n != before.get(name, 0)}


def test_a_read_that_shares_no_call_finishes_without_looking_for_followers(bridge: Any) -> None:
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    alone = claimed(rt, client, {"method": "GET", "path": "/Vehicles", "query": {"n": 1}, "coalesce": False})
    shared = claimed(rt, client, {"method": "GET", "path": "/Vehicles", "query": {"n": 2}})
    assert rt.redis.hget(keys.job(alone), JobField.alone) == b"1"
    assert rt.redis.hget(keys.job(shared), JobField.alone) is None

    _, spent_alone = finish_counting(rt, alone, callback=False)
    _, spent_shared = finish_counting(rt, shared, callback=False)

    assert "smembers" not in spent_alone and "get" not in spent_alone
    assert spent_shared.get("smembers") == 1 and spent_shared.get("get") == 1  # it may have followers
    # Either way its answer is the fresh one later reads with a max age may take.
    for job_id in (alone, shared):
        read = text(rt.redis.hget(keys.job(job_id), JobField.read) or b"")
        assert text(rt.redis.get(f"{read}:fresh") or b"").startswith(f"{job_id}:")


def test_a_read_without_the_mark_still_finishes_the_jobs_that_joined_it(bridge: Any) -> None:
    """A job a producer of the previous version submitted has no mark: its finish looks for followers."""
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    leader = claimed(rt, client, {"method": "GET", "path": "/Drivers", "coalesce": False})
    rt.redis.hdel(keys.job(leader), JobField.alone)
    follower = client.submit({"method": "GET", "path": "/Drivers", "query": {"x": 1}})
    rt.redis.hset(keys.job(follower), JobField.coalesced_with, leader)  # as if it had joined the call
    rt.redis.sadd(keys.followers(leader), follower)

    _, spent = finish_counting(rt, leader, callback=False)

    assert spent.get("smembers") == 1
    assert client.get(follower).status == "succeeded"


def test_a_held_callback_gets_the_finished_record_without_reading_it_again(bridge: Any) -> None:
    rt, client, _ = bridge(**ENV)
    keys = Keys(client.settings.key_prefix)
    job_id = claimed(rt, client, {"method": "GET", "path": "/Vehicles", "coalesce": False, "callback": CALLBACK})

    done, spent = finish_counting(rt, job_id, callback=True, hold_ms=2000)

    assert done.finished and done.held
    stored = {text(k): text(v) for k, v in rt.redis.hgetall(keys.job(job_id)).items()}
    assert done.fields == stored
    assert stored[JobField.status] == "succeeded" and stored[JobField.cb] == "pending"
    assert "hgetall" not in spent and spent.get("hmget", 0) <= 1  # one read of the job, before the writes
