"""What the demo submits: the fleet, then each vehicle's record and its trips of yesterday.

Like a real producer, it first asks for ``GET /Vehicles`` through the bridge
and takes the plates from that answer. Every operation carries a callback and
an idempotency key (``trips-<plate>-<day>``, as in spec §4).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from rich.console import Console

from ..errors import BridgeError
from ..producer import BridgeClient
from .report import JobTracker

FLEET_TIMEOUT_S = 60.0


class BatchFailed(BridgeError):
    """The fleet request failed, so there is nothing to submit."""


def vehicle_operations(plates: list[str], callback_url: str, today: date) -> list[dict[str, Any]]:
    """Per plate: ``GET /Vehicles/{plate}`` and ``GET /Geolocation/Trips`` for yesterday."""
    day = today - timedelta(days=1)
    common = {"method": "GET", "callback": {"url": callback_url}, "metadata": {"batch": f"demo-{day}"}}
    operations: list[dict[str, Any]] = []
    for plate in plates:
        query = {"registrationNumber": plate, "startDate": f"{day}T00:00:00", "endDate": f"{today}T00:00:00"}
        operations.append({**common, "path": f"/Vehicles/{plate}", "idempotency_key": f"vehicle-{plate}-{day}"})
        operations.append(
            {**common, "path": "/Geolocation/Trips", "query": query, "idempotency_key": f"trips-{plate}-{day}"}
        )
    return operations


def fleet_operation(callback_url: str, today: date) -> dict[str, Any]:
    """``GET /Vehicles`` with a callback."""
    return {
        "method": "GET",
        "path": "/Vehicles",
        "callback": {"url": callback_url},
        "idempotency_key": f"fleet-{today}",
    }


def submit_batch(client: BridgeClient, callback_url: str, console: Console) -> JobTracker:
    """Submit the fleet, wait for it, then the per-vehicle operations; returns the tracker of all jobs."""
    today = date.today()
    fleet_job = client.submit(fleet_operation(callback_url, today))
    with console.status("GET /Vehicles: fetching the fleet through the bridge..."):
        status = client.wait(fleet_job, timeout=FLEET_TIMEOUT_S)
    body = status.response.body if status.response is not None else None
    if status.status != "succeeded" or not isinstance(body, list):
        raise BatchFailed(f"GET /Vehicles did not succeed: {status.error or status.status}")
    plates = [str(vehicle["registrationNumber"]) for vehicle in body if isinstance(vehicle, dict)]
    tracker = JobTracker(client, [fleet_job])
    tracker.add(client.submit_many(vehicle_operations(plates, callback_url, today)))
    console.print(f"submitted {len(tracker.job_ids)} operations for {len(plates)} vehicles")
    return tracker
