"""What a batch of submissions writes (issue 17): ``submit.lua`` gathers writes to the same set.

A batch of jobs of one account reserves its sequence numbers in one ``INCRBY`` and enters each
lane and the account's index of recent jobs with one ``ZADD`` apiece; the commands come from the
server's own counters (``INFO commandstats``; the tests of one session run one at a time). That
the recent index stays bounded when a batch's numbers pass a multiple of the trim period is
``test_ui.py``'s test.
"""

from __future__ import annotations

from typing import Any

from optimum_bridge import BridgeClient
from optimum_bridge.keys import Keys
from tests.system.test_ingress import local_settings


def commands(client: BridgeClient) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in client.redis.info("commandstats").items()}


def vehicle(n: int, **extra: Any) -> dict[str, Any]:
    return {"method": "GET", "path": "/Vehicles", "query": {"n": n}, "coalesce": False, **extra}


def test_a_batch_enters_each_lane_and_the_recent_index_in_one_zadd(redis_server: Any, prefix: str) -> None:
    client = BridgeClient(local_settings(redis_server.url, prefix, BRIDGE_VALIDATE_OPERATIONS="off"))
    keys = Keys(prefix)
    operations = [vehicle(n, priority="urgent" if n % 3 == 0 else "normal") for n in range(60)]

    before = commands(client)
    ids = client.submit_many(operations)
    after = commands(client)
    spent = {name: n - before.get(name, 0) for name, n in after.items()}

    assert spent["zadd"] == 4  # the urgent lane, the normal lane, the recent index; the ready set (lanes were empty)
    assert spent["incrby"] == 1 and spent.get("incr", 0) == 0
    urgent = [m.decode() for m in client.redis.zrange(keys.lane("urgent"), 0, -1)]
    normal = [m.decode() for m in client.redis.zrange(keys.lane("normal"), 0, -1)]
    assert urgent == [ids[n] for n in range(60) if n % 3 == 0]  # in the order submitted
    assert normal == [ids[n] for n in range(60) if n % 3 != 0]
    assert [m.decode() for m in client.redis.zrange(keys.recent_jobs(), 0, -1)] == ids


def test_sequence_numbers_keep_the_order_across_batches_and_idempotent_repeats(redis_server: Any, prefix: str) -> None:
    client = BridgeClient(local_settings(redis_server.url, prefix, BRIDGE_VALIDATE_OPERATIONS="off"))
    keys = Keys(prefix)
    first = client.submit_many([vehicle(n, idempotency_key=f"k{n}") for n in range(5)])
    # A repeat of an idempotency key takes no job, and leaves its reserved number unused.
    second = client.submit_many([vehicle(n, idempotency_key=f"k{n}") for n in range(3, 8)])

    assert second[:2] == first[3:]
    lane = [m.decode() for m in client.redis.zrange(keys.lane("normal"), 0, -1)]
    assert lane == first + second[2:]


def test_a_read_joining_a_call_of_its_own_batch_lifts_it_to_its_lane(redis_server: Any, prefix: str) -> None:
    client = BridgeClient(local_settings(redis_server.url, prefix, BRIDGE_VALIDATE_OPERATIONS="off"))
    keys = Keys(prefix)
    same = {"method": "GET", "path": "/Drivers"}
    leader, follower = client.submit_many([{**same, "priority": "bulk"}, {**same, "priority": "urgent"}])

    assert client.redis.zscore(keys.lane("urgent"), leader) is not None
    assert client.redis.zscore(keys.lane("bulk"), leader) is None
    assert client.redis.zscore(keys.lane("urgent"), follower) is None  # it waits on the call, in no lane
