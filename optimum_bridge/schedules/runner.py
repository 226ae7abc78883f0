"""Turns due ticks into batches (spec §15): the upkeep timer of every worker, and manual runs.

Each turn (``run``) is one script call for every schedule at once; for each
due tick, one atomic step moves the schedule to its next tick and claims the
tick it runs, so of all the workers that saw it due exactly one makes the
batch. Ticks that fell in an outage (a span no worker looked, see
``store``) follow ``missed``: ``skip`` makes none for them, ``latest`` one, for
the latest. A paused schedule's ticks pass without a batch. Making the batch
(rendering, writing thousands of jobs) runs in a small thread pool, so the
upkeep loop's other timers never wait on it.

A tick makes one §11 batch whose metadata carries ``schedule`` and ``tick``.
With ``overlap = skip``, a tick whose previous run still runs makes none.
With ``source``, the tick first submits the source operation as a job; a
later turn, in whichever worker, sees it final and submits one operation per
``for_each`` item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import redis

from optimum_bridge.clock import isoformat
from optimum_bridge.errors import BridgeError, JobNotFound
from optimum_bridge.keys import Keys
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schedules.model import Schedule, file_schedules
from optimum_bridge.schedules.store import MANUAL, Due, ScheduleStore, from_ms, to_ms
from optimum_bridge.schemas import Operation
from optimum_bridge.settings import Settings

log = logging.getLogger(__name__)

#: A gap this long between two looks for due ticks means no worker ran (their upkeep looks every second).
OUTAGE_S = 10.0
#: The longest the upkeep loop waits before looking again (a schedule may be added meanwhile).
LOOK_EVERY_S = 1.0
#: How soon a waiting source job is looked at again.
SOURCE_EVERY_MS = 500
#: A tick claimed this long ago without its batch recorded: is the worker that claimed it still alive?
STALE_MS = 2000


def tick_ttl_s(tick: datetime, next_tick: datetime) -> int:
    """How long a tick's claim is kept: long past any worker that could still read the tick as due."""
    return max(3600, int((next_tick - tick).total_seconds()) * 3)


class ScheduleRunner:
    """Runs the ticks of every schedule, with the bridge's own client."""

    def __init__(
        self,
        store: ScheduleStore,
        bridge: BridgeClient,
        *,
        file_schedules: dict[str, Schedule] | None = None,
        outage_s: float = OUTAGE_S,
        pool: Executor | None = None,
        owner: str = MANUAL,
        alive_s: float = 5.0,
    ) -> None:
        self.store = store
        self._bridge = bridge
        self._file = file_schedules
        self._outage_ms = int(outage_s * 1000)
        self._pool = pool
        self._owner = owner  # the worker's heartbeat name: another worker takes its claims over if it dies
        self._alive_s = alive_s

    # -- the upkeep timer ---------------------------------------------------------------------

    def run(self) -> float:
        """One turn: claim the due ticks, look at waiting sources; the seconds until the next turn."""
        self.sync()
        due = self.store.due(outage_ms=self._outage_ms, stale_ms=STALE_MS)
        for name, expected_ms in due.ticks:
            self._isolated(self._advance, name, expected_ms, due)
        for member in due.sources:
            self._isolated(self._check_source, member, due.now_ms)
        for member in due.making:
            self._isolated(self._recover, member, due.now_ms)
        if due.first_ms is None:
            return LOOK_EVERY_S
        return min(LOOK_EVERY_S, max(0.01, (due.first_ms - due.now_ms) / 1000 + 0.005))

    @staticmethod
    def _isolated(step: Callable[..., None], what: str, *args: Any) -> None:
        """One schedule's step; a failure (a definition that no longer loads, a bug) leaves the others going."""
        try:
            step(what, *args)
        except redis.RedisError:
            raise  # the whole turn is retried (the upkeep logs it once)
        except Exception:
            log.exception("schedule %s: its turn failed; the other schedules go on", what)

    def sync(self) -> None:
        """Write the accounts file's schedules to Redis, once per process."""
        if self._file is not None:
            self.store.sync_file(self._file)
            self._file = None

    def _advance(self, name: str, expected_ms: int, due: Due) -> None:
        """Move a due schedule past its tick; make the tick's batch if this worker claims it."""
        defined = self.store.get(name)
        if defined is None:
            self.store.forget(name)
            return
        schedule = defined.schedule
        expected = from_ms(expected_ms)
        outage_from, outage_to = due.outage
        run: datetime | None = expected
        if outage_from < expected_ms <= outage_to:  # fell while no worker ran
            latest = schedule.ticks.at_or_before(from_ms(min(due.now_ms, outage_to)))
            next_tick = schedule.ticks.after(latest)
            run = latest if schedule.missed == "latest" else None
            log.info("schedule %s: ticks from %s missed (no worker ran); %s", name, expected, schedule.missed)
        else:
            next_tick = schedule.ticks.after(expected)
        if run is not None and self.store.state(name).get("paused"):
            run = None
        ttl_s = tick_ttl_s(run or expected, next_tick)
        run_ms = to_ms(run) if run is not None else None
        next_ms = to_ms(next_tick)
        claimed = self.store.claim(
            name, expected_ms=expected_ms, tick_ms=run_ms, next_ms=next_ms, ttl_s=ttl_s, owner=self._owner
        )
        if claimed and run is not None:
            self._later(self.make, name, schedule, run, ttl_s)

    def _recover(self, member: str, now_ms: int) -> None:
        """A tick claimed a while ago without its batch: if the worker that claimed it died, make it here."""
        name, _, tick_text = member.rpartition("|")
        outcome = self.store.outcome(name, int(tick_text)) or ""
        defined = self.store.get(name)
        if not outcome.startswith("claimed:") or defined is None:  # made (or expired, or removed): done
            self.store.made(member)
            return
        owner = outcome.removeprefix("claimed:")
        beat_s = self.store.heartbeat_s(owner)
        if owner in (self._owner, MANUAL) or (beat_s is not None and now_ms / 1000 - beat_s <= self._alive_s):
            return  # still making it
        if self.store.take_over(member, dead=owner, owner=self._owner):
            tick = from_ms(int(tick_text))
            log.warning("schedule %s: worker %s died before making tick %s's batch; making it here", name, owner, tick)
            self._later(self.make, name, defined.schedule, tick, tick_ttl_s(tick, defined.schedule.ticks.after(tick)))

    def _later(self, work: Callable[..., None], *args: Any) -> None:
        """Run ``work`` in the pool (the upkeep timer) or now (a manual run)."""
        if self._pool is None:
            work(*args)
            return
        self._pool.submit(self._logged, work, *args)

    @staticmethod
    def _logged(work: Callable[..., None], *args: Any) -> None:
        try:
            work(*args)
        except Exception:  # a thread of the pool: log it, the next tick goes on
            log.exception("schedule %s: tick %s failed", args[0], args[2] if len(args) > 2 else "?")

    # -- a tick -------------------------------------------------------------------------------

    def run_now(self, name: str) -> str:
        """One tick now, out of the schedule's own (``POST /v1/schedules/{name}:run``): what it made."""
        defined = self.store.get(name)
        if defined is None:
            raise KeyError(name)
        tick = self.store.now().replace(microsecond=0)
        ttl_s = tick_ttl_s(tick, defined.schedule.ticks.after(tick))
        if not self.store.claim_now(name, to_ms(tick), ttl_s=ttl_s):
            return "skipped: a run of this second exists"
        self.make(name, defined.schedule, tick, ttl_s)
        return self.store.outcome(name, to_ms(tick)) or ""

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

    # -- sources ------------------------------------------------------------------------------

    def _check_source(self, member: str, now_ms: int) -> None:
        """A tick waiting on its source job: once the job is final, one worker makes the batch."""
        name, _, tick_text = member.rpartition("|")
        outcome = self.store.outcome(name, int(tick_text)) or ""
        job_id = outcome.removeprefix("source:")
        try:
            finished = self._bridge.get(job_id).finished
        except JobNotFound:
            finished = True
        if not finished:
            self.store.look_again(member, now_ms + SOURCE_EVERY_MS)
            return
        defined = self.store.get(name)
        if defined is None:
            self.store.take_source(member, owner=MANUAL, ttl_s=60)  # removed meanwhile: stop waiting
            return
        tick = from_ms(int(tick_text))
        ttl_s = tick_ttl_s(tick, defined.schedule.ticks.after(tick))
        if self.store.take_source(member, owner=self._owner, ttl_s=ttl_s):
            self._later(self.fan_out, name, job_id, tick)

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


def worker_runner(settings: Settings, client: redis.Redis, keys: Keys, *, owner: str, alive_s: float) -> ScheduleRunner:
    """A worker's runner: the accounts file's schedules, and a pool of two threads to make batches in
    (a big batch does not hold up the next schedule's, nor the upkeep loop). ``owner`` is the worker's
    heartbeat name; a worker silent for ``alive_s`` is dead, and its claimed ticks are made by another."""
    bridge = BridgeClient(settings, client=client)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="schedules")
    store = ScheduleStore(client, keys)
    schedules = file_schedules(settings.accounts)
    return ScheduleRunner(store, bridge, file_schedules=schedules, pool=pool, owner=owner, alive_s=alive_s)


def manual_runner(bridge: BridgeClient) -> ScheduleRunner:
    """A runner for manual runs and for reading schedules (the ingress, the CLI): the workers run the ticks."""
    store = ScheduleStore(bridge.redis, Keys(bridge.settings.key_prefix))
    return ScheduleRunner(store, bridge, file_schedules=file_schedules(bridge.settings.accounts))
