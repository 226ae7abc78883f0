"""``AsyncBridgeClient`` under load (spec §17): a hundred tasks in one ``asyncio.gather`` submitting, waiting,
batching and cancelling at once against real workers."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from optimum_bridge import AsyncBridgeClient
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import bridge_env, settings_from

PLATES = generate_fleet(42, 60).plates()


def vehicle(i: int) -> dict[str, str]:
    return {"method": "GET", "path": f"/Vehicles/{PLATES[i % len(PLATES)]}"}


async def task(client: AsyncBridgeClient, i: int) -> tuple[str, str]:
    """One of four producer stories, by ``i``; what it ended with."""
    match i % 4:
        case 0:
            status = await client.wait(await client.submit(vehicle(i)), timeout=90)
            return "submit", status.status
        case 1:
            ids = await client.submit_many([vehicle(i), {"method": "GET", "path": "/Persons"}])
            statuses = await asyncio.gather(*(client.wait(job_id, timeout=90) for job_id in ids))
            return "submit_many", ",".join(sorted({s.status for s in statuses}))
        case 2:
            batch = await client.submit_batch([vehicle(i), vehicle(i + 1), vehicle(i + 2)], metadata={"task": i})
            done = await client.wait_batch(batch.id, timeout=90)
            return "batch", f"{done.counts.succeeded}/{done.total}"
        case _:
            later = datetime.now(UTC) + timedelta(hours=1)
            job_id = await client.submit({**vehicle(i), "not_before": later.isoformat()})
            cancelled = await client.cancel(job_id)
            return "cancel", f"{cancelled.status}:{cancelled.attempts}"


def test_a_hundred_tasks_submit_wait_batch_and_cancel_at_once(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="100/s", BRIDGE_RATE_BURST="10")
    workers(env, concurrency=8)

    async def main() -> list[tuple[str, str]]:
        async with AsyncBridgeClient(settings_from(env)) as client:
            return await asyncio.gather(*(task(client, i) for i in range(100)))

    outcomes = Counter(asyncio.run(main()))
    print(f"\n100 concurrent tasks: {dict(outcomes)}; {sb.stats()['calls']} API calls")
    assert outcomes == {
        ("submit", "succeeded"): 25,
        ("submit_many", "succeeded"): 25,
        ("batch", "3/3"): 25,
        ("cancel", "cancelled:0"): 25,
    }
