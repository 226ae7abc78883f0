"""What one claimed tick makes (spec §15): its batch, or its source job and then the fan-out.

``schedules.runner`` decides which ticks run and where (claims, outages,
a dead worker's ticks); a ``TickMaker`` makes what a tick runs, with the
bridge's own client, and records the outcome in ``schedules.store``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from optimum_bridge.clock import isoformat
from optimum_bridge.errors import BridgeError, JobNotFound
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schedules.model import Schedule
from optimum_bridge.schedules.store import ScheduleStore, from_ms, to_ms
from optimum_bridge.schemas import Operation

log = logging.getLogger(__name__)


def tick_ttl_s(tick: datetime, next_tick: datetime) -> int:
    """How long a tick's claim is kept: long past any worker that could still read the tick as due."""
    return max(3600, int((next_tick - tick).total_seconds()) * 3)


class TickMaker:
    """Makes a claimed tick's batch, or its source job and, once that is final, the batch of its items."""

    def __init__(self, store: ScheduleStore, bridge: BridgeClient) -> None:
        self.store = store
        self._bridge = bridge

    def make(self, name: str, schedule: Schedule, tick: datetime, ttl_s: int) -> None:
        """The claimed tick's batch (or, with ``source``, its source job); what happened is recorded."""
        tick_ms = to_ms(tick)
        if schedule.overlap == "skip" and self._still_running(name):
            log.info("schedule %s: tick %s skipped, the previous run still runs", name, tick)
            self.store.record(name, tick_ms, "skipped: the previous run still runs", ttl_s=ttl_s)
            return
        previous = schedule.ticks.before(tick)
        try:
            if schedule.fans_out:
                operation = self._tagged(schedule.render_source(tick, previous), name, tick)
                job_id = self._bridge.submit(operation)
                self.store.wait_source(name, tick_ms, job_id, ttl_s=ttl_s)
                return
            operations = schedule.render_operations(tick, previous)
        except BridgeError as exc:
            self._failed(name, tick_ms, str(exc), ttl_s)
            return
        self._submit(name, schedule, tick, operations, ttl_s)

    def _submit(self, name: str, schedule: Schedule, tick: datetime, operations: list[Operation], ttl_s: int) -> None:
        tick_ms = to_ms(tick)
        size = len(operations) + (1 if schedule.fans_out else 0)
        if not operations:
            self.store.record(name, tick_ms, "done: no item", ttl_s=ttl_s, last_batch="", last_size=size, last_error="")
            return
        metadata = {**schedule.metadata, "schedule": name, "tick": isoformat(tick)}
        try:
            batch = self._bridge.submit_batch(operations, callback=schedule.callback, metadata=metadata)
        except BridgeError as exc:
            self._failed(name, tick_ms, str(exc), ttl_s)
            return
        log.info("schedule %s: tick %s made batch %s (%d operations)", name, tick, batch.id, len(operations))
        self.store.record(name, tick_ms, batch.id, ttl_s=ttl_s, last_batch=batch.id, last_size=size, last_error="")

    def _failed(self, name: str, tick_ms: int, message: str, ttl_s: int) -> None:
        log.warning("schedule %s: tick %s made no batch: %s", name, from_ms(tick_ms), message)
        self.store.record(name, tick_ms, f"failed: {message}", ttl_s=ttl_s, last_batch="", last_error=message)
        self.store.clear(name, "source_job")

    @staticmethod
    def _tagged(operation: Operation, name: str, tick: datetime) -> Operation:
        metadata = {**operation.metadata, "schedule": name, "tick": isoformat(tick), "source": True}
        return operation.model_copy(update={"metadata": metadata})

    def _still_running(self, name: str) -> bool:
        """Whether the schedule's last run (its source job, or its batch) is not finished."""
        state = self.store.state(name)
        try:
            if state.get("source_job") and self._source_running(name, state):
                return True
            if state.get("last_batch"):
                return not self._bridge.get_batch(state["last_batch"]).finished
        except JobNotFound:  # expired: long finished
            return False
        return False

    def _source_running(self, name: str, state: dict[str, str]) -> bool:
        """Whether a tick's source job, or the wait for it, is under way (a fan-out whose worker died is not)."""
        try:
            if not self._bridge.get(state["source_job"]).finished:
                return True
        except JobNotFound:
            return False
        return self.store.source_waiting(name, int(state.get("last_tick") or 0))

    def fan_out(self, name: str, job_id: str, tick: datetime) -> None:
        """The source job is final: one operation per ``for_each`` item, as the tick's batch."""
        defined = self.store.get(name)
        if defined is None:  # removed meanwhile
            return
        schedule = defined.schedule
        tick_ms = to_ms(tick)
        ttl_s = tick_ttl_s(tick, schedule.ticks.after(tick))
        try:
            status = self._bridge.get(job_id)
        except JobNotFound:
            self._failed(name, tick_ms, f"source: job {job_id} expired", ttl_s)
            return
        if status.status != "succeeded" or status.response is None:
            kind = status.error.kind if status.error is not None else status.status
            self._failed(name, tick_ms, f"source: {kind}", ttl_s)
            return
        try:
            items = schedule.items(status.response.body)
            operations = schedule.render_items(tick, schedule.ticks.before(tick), items)
        except (BridgeError, ValueError) as exc:
            self._failed(name, tick_ms, f"for_each: {exc}", ttl_s)
            return
        self._submit(name, schedule, tick, operations, ttl_s)
        self.store.clear(name, "source_job")
