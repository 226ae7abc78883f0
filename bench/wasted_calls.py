"""Calls a realistic batch wastes, with spec §13 on and off (the ``wasted_calls`` section of ``python -m bench waste``).

The batch is the demo's: per vehicle of the fleet, ``GET /Vehicles/{plate}``
and a day of ``GET /Geolocation/Trips``, in ``bulk``. Then 10 % of those reads
again (a second producer asking for the same data in the same minute) and 5 %
malformed operations (half ``/Vehicle/{plate}``, a typo; half trips without
``endDate``), shuffled with a fixed seed and submitted one by one.

- **on**: operations checked against the sandbox's OpenAPI document
  (``BRIDGE_VALIDATE_OPERATIONS=strict``), identical reads sharing one call;
- **off** (the baseline, same run, same order): ``BRIDGE_VALIDATE_OPERATIONS=off``
  and ``"coalesce": false`` on every operation: what the bridge did before §13.

Measured: calls the sandbox received, 429s, operations refused at submission,
and the time from the first submission until every job is final.
"""

from __future__ import annotations

import random
import time
from datetime import date
from typing import TYPE_CHECKING, Any

from optimum_bridge import BridgeClient, InvalidOperation
from optimum_bridge.demo.batch import vehicle_operations
from optimum_bridge.devstack import settings_from, stop_workers, wait_until
from optimum_bridge.keys import Keys
from optimum_bridge.sandbox.fleet import generate_fleet

from .common import bridge_settings, finished_counts, start_workers
from .report import print_table

if TYPE_CHECKING:
    from .waste import Stack

QUOTA = "10/s"
DUPLICATED, MALFORMED = 0.10, 0.05
SEED = 20261202


def batch(fleet_size: int) -> list[dict[str, Any]]:
    """The demo's reads for ``fleet_size`` vehicles, 10 % of them again and 5 % malformed, shuffled."""
    rng = random.Random(SEED)
    plates = generate_fleet(42, fleet_size).plates()
    demo = vehicle_operations(plates, "http://127.0.0.1:9/unused", date(2026, 11, 27))
    # No callback, no idempotency key: the duplicates come from another producer, with keys of its own.
    reads = [{k: v for k, v in op.items() if k not in ("callback", "idempotency_key")} for op in demo]
    again = rng.sample(reads, round(len(reads) * DUPLICATED))
    bad: list[dict[str, Any]] = []
    for i in range(round(len(reads) * MALFORMED)):
        plate = plates[i % len(plates)]
        if i % 2 == 0:
            bad.append({"method": "GET", "path": f"/Vehicle/{plate}", "priority": "bulk"})
        else:
            query = {"registrationNumber": plate, "startDate": "2026-11-26T00:00:00"}
            bad.append({"method": "GET", "path": "/Geolocation/Trips", "query": query, "priority": "bulk"})
    ops = reads + [dict(op) for op in again] + bad
    rng.shuffle(ops)
    return ops


def _finished(client: BridgeClient, ids: list[str]) -> bool:
    counts = finished_counts(client.redis, Keys(client.settings.key_prefix))
    return sum(int(c or 0) for c in counts) >= len(ids)


def one_side(stack: Stack, ops: list[dict[str, Any]], *, on: bool) -> dict[str, Any]:
    """Run ``ops`` through a fresh bridge with §13 ``on`` or off: calls, 429s, refusals, drain time."""
    stack.redis.flush()
    stack.sandbox.reset()
    stack.sandbox.configure(quota=QUOTA, rate_limit_headers="none")
    values = bridge_settings(
        stack.redis.url,
        stack.sandbox,
        OPTIMUM_RATE_LIMIT=QUOTA,
        BRIDGE_RATE_LIMIT_MARGIN_S="0.15",
        BRIDGE_VALIDATE_OPERATIONS="strict" if on else "off",
    )
    workers = start_workers(values, count=1, concurrency=4, workdir=stack.workdir)
    try:
        client = BridgeClient(settings_from(values))
        keys = Keys(client.settings.key_prefix)
        if on:  # the workers fetch the API's document at start; wait for it
            wait_until(lambda: client.redis.exists(keys.openapi("default")), timeout=30, what="the OpenAPI document")
        ids, refused = [], 0
        started = time.monotonic()
        for op in ops:
            try:
                ids.append(client.submit(op if on else {**op, "coalesce": False}))
            except InvalidOperation:
                refused += 1
        wait_until(lambda: _finished(client, ids), timeout=600, interval=0.25, what="the batch to drain")
        drained = time.monotonic() - started
        statuses = [client.get(i) for i in ids]
        client.close()
    finally:
        stop_workers(workers)
    stats = stack.sandbox.stats()
    return {
        "mode": "on" if on else "off",
        "operations": len(ops),
        "refused_at_submission": refused,
        "calls": stats["calls"],
        "rate_limited": stats["rate_limited"],
        "drain_s": drained,
        "succeeded": sum(s.status == "succeeded" for s in statuses),
        "failed": sum(s.status == "failed" for s in statuses),
        "shared": sum(s.coalesced_with is not None for s in statuses),
    }


def rows(off: dict[str, Any], on: dict[str, Any]) -> list[list[Any]]:
    """Table rows: each side, then on / off as ratios."""
    out = []
    for side in (off, on):
        out.append(
            [
                side["mode"],
                side["operations"],
                side["refused_at_submission"],
                side["shared"],
                side["calls"],
                side["rate_limited"],
                f"{side['drain_s']:.1f}",
                f"{side['succeeded']} / {side['failed']}",
            ]
        )
    out.append(
        [
            "on / off",
            "",
            "",
            "",
            f"{on['calls'] / off['calls']:.2f}",
            "",
            f"{on['drain_s'] / off['drain_s']:.2f}",
            "",
        ]
    )
    return out


HEADERS = ["spec 13", "ops", "refused", "shared", "calls", "429s", "drain s", "succeeded / failed"]


def wasted_calls(stack: Stack, *, quick: bool) -> dict[str, Any]:
    """The demo's batch (20 vehicles quick, 60 full), §13 off then on, at 10/s: the record and its table."""
    fleet = 20 if quick else 60
    ops = batch(fleet)
    print(f"  wasted calls: {len(ops)} operations ({fleet} vehicles), off then on, quota {QUOTA}", flush=True)
    off = one_side(stack, ops, on=False)
    on = one_side(stack, ops, on=True)
    title = (
        f"Calls spent on the demo's batch ({fleet} vehicles: vehicles and trips, +10 % duplicated reads, "
        f"+5 % malformed), quota {QUOTA}, 1 worker x 4 threads"
    )
    return {
        "title": "calls a realistic batch wastes, spec 13 on and off",
        "fleet": fleet,
        "quota": QUOTA,
        "rows": [off, on],
        "calls_ratio": on["calls"] / off["calls"],
        "drain_ratio": on["drain_s"] / off["drain_s"],
        "table": print_table(title, HEADERS, rows(off, on)),
    }
