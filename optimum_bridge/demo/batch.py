"""What the demo submits: the fleet, then a batch of each vehicle's record and trips, then one urgent call.

Like a real producer, it first asks for ``GET /Vehicles`` through the bridge
and takes the plates from that answer. The per-vehicle operations go in as one
``bulk`` batch (``BridgeClient.submit_batch``), each with its callback and an
idempotency key (``trips-<plate>-<day>``, as in spec §4), and the batch with
its own ``batch.completed`` callback; its first ``estimated_done_at`` is kept
to set beside the actual finish. Once a third of the batch is done,
``UrgentProbe`` submits one ``urgent`` operation into the backlog: how long it
waits for its call (submission to ``started_at``) is the point of spec §10.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from rich.console import Console

from optimum_bridge.demo.report import JobTracker
from optimum_bridge.errors import BridgeError
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schemas import Batch

FLEET_TIMEOUT_S = 60.0
#: The urgent operation goes in once this share of the batch is final.
URGENT_AFTER = 1 / 3


class BatchFailed(BridgeError):
    """The fleet request failed, so there is nothing to submit."""


def vehicle_operations(plates: list[str], callback_url: str, today: date) -> list[dict[str, Any]]:
    """Per plate, as ``bulk``: ``GET /Vehicles/{plate}`` and ``GET /Geolocation/Trips`` for yesterday."""
    day = today - timedelta(days=1)
    common = {
        "method": "GET",
        "priority": "bulk",
        "callback": {"url": callback_url},
        "metadata": {"batch": f"demo-{day}"},
    }
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


def urgent_operation(plate: str, callback_url: str, today: date) -> dict[str, Any]:
    """``GET /Vehicles/{plate}`` as ``urgent``, with a callback: a dispatcher asking about one vehicle now."""
    return {
        "method": "GET",
        "path": f"/Vehicles/{plate}",
        "priority": "urgent",
        "callback": {"url": callback_url},
        "idempotency_key": f"urgent-{plate}-{today}",
    }


@dataclass(frozen=True)
class DemoBatch:
    """What was submitted: every job to follow, the batch, and its forecast right after submission."""

    tracker: JobTracker
    batch: Batch
    plates: list[str]
    submitted_at: datetime
    forecast_done_at: datetime | None

    @property
    def forecast_s(self) -> float | None:
        """The first ``estimated_done_at``, in seconds after the batch's submission."""
        if self.forecast_done_at is None:
            return None
        return (self.forecast_done_at - self.submitted_at).total_seconds()


def submit_work(client: BridgeClient, callback_url: str, console: Console) -> DemoBatch:
    """Submit the fleet, wait for it, then the per-vehicle batch; returns what to follow."""
    today = date.today()
    fleet_job = client.submit(fleet_operation(callback_url, today))
    with console.status("GET /Vehicles: fetching the fleet through the bridge..."):
        status = client.wait(fleet_job, timeout=FLEET_TIMEOUT_S)
    body = status.response.body if status.response is not None else None
    if status.status != "succeeded" or not isinstance(body, list):
        raise BatchFailed(f"GET /Vehicles did not succeed: {status.error or status.status}")
    plates = [str(vehicle["registrationNumber"]) for vehicle in body if isinstance(vehicle, dict)]
    batch = client.submit_batch(
        vehicle_operations(plates, callback_url, today),
        callback={"url": callback_url},
        metadata={"name": f"demo-{today - timedelta(days=1)}", "vehicles": len(plates)},
    )
    first = client.get_batch(batch.id)
    tracker = JobTracker(client, [fleet_job, *batch.job_ids])
    submitted = DemoBatch(tracker, batch, plates, first.submitted_at, first.estimated_done_at)
    forecast = f"{submitted.forecast_s:.1f}s" if submitted.forecast_s is not None else "none"
    console.print(
        f"submitted a batch of {len(batch.job_ids)} bulk operations for {len(plates)} vehicles "
        f"(batch {batch.id[:8]}, forecast: done in {forecast})",
        soft_wrap=True,
    )
    return submitted


class UrgentProbe:
    """One urgent operation, submitted once a share of the batch is done; how long it waited for its call."""

    def __init__(self, client: BridgeClient, work: DemoBatch, callback_url: str, console: Console) -> None:
        self._client = client
        self._work = work
        self._console = console
        plate = work.plates[-1] if work.plates else "AA-000-AA"  # the last plate: its bulk call is far away
        self.operation = urgent_operation(plate, callback_url, date.today())
        self.job_id: str | None = None

    def __call__(self, tracker: JobTracker) -> None:
        """Called on every progress poll: submit the urgent operation once ``URGENT_AFTER`` of the batch is final."""
        if self.job_id is not None:
            return
        batch = self._work.batch
        done = sum(1 for job_id in batch.job_ids if job_id in tracker.final)
        if done < len(batch.job_ids) * URGENT_AFTER:
            return
        self.job_id = self._client.submit(self.operation)
        tracker.add([self.job_id])
        waiting = len(batch.job_ids) - done
        self._console.print(
            f"urgent    {self.operation['method']} {self.operation['path']} submitted "
            f"with up to {waiting} bulk operations still to go",
            soft_wrap=True,
        )

    def waited_s(self, tracker: JobTracker) -> float | None:
        """Seconds from its submission to its call (``started_at``); None if it never started."""
        status = tracker.final.get(self.job_id) if self.job_id is not None else None
        if status is None or status.started_at is None:
            return None
        return (status.started_at - status.submitted_at).total_seconds()
