"""Turns due ticks into batches (spec §15): the upkeep timer of every worker, and manual runs.

Each turn (``run``) is one script call for every schedule at once; for each
due tick, one atomic step moves the schedule to its next tick and claims the
tick it runs, so of all the workers that saw it due exactly one makes the
batch. Ticks that fell in an outage (a span no worker looked, see
``store``) follow ``missed``: ``skip`` makes none for them, ``latest`` one, for
the latest. A paused schedule's ticks pass without a batch. Making the batch
(rendering, writing thousands of jobs) runs in a small thread pool, so the
upkeep loop's other timers never wait on it.

A tick makes one §11 batch whose metadata carries ``schedule`` and ``tick``
(``schedules.maker``). With ``overlap = skip``, a tick whose previous run
still runs makes none. With ``source``, the tick first submits the source
operation as a job; a later turn, in whichever worker, sees it final and
submits one operation per ``for_each`` item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import datetime
from typing import Any

import redis

from optimum_bridge.errors import JobNotFound
from optimum_bridge.keys import Keys
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schedules.maker import TickMaker, tick_ttl_s
from optimum_bridge.schedules.model import Schedule, file_schedules
from optimum_bridge.schedules.store import MANUAL, Due, ScheduleStore, from_ms, to_ms
from optimum_bridge.settings import Settings

log = logging.getLogger(__name__)

#: A gap this long between two looks for due ticks means no worker ran (their upkeep looks every 2 s at most).
OUTAGE_S = 10.0
#: The longest the upkeep loop waits before looking again (a schedule may be added, a source job may end):
#: a tick itself is looked for at its time. 1 s cost 7 of the 20 Redis commands a second an idle worker may spend.
LOOK_EVERY_S = 2.0
#: How soon a waiting source job is looked at again.
SOURCE_EVERY_MS = 500
#: A tick claimed this long ago without its batch recorded: is the worker that claimed it still alive?
STALE_MS = 2000


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
        self.maker = TickMaker(store, bridge)
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
            self._later(self.maker.make, name, schedule, run, ttl_s)

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
            self._later(
                self.maker.make, name, defined.schedule, tick, tick_ttl_s(tick, defined.schedule.ticks.after(tick))
            )

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

    # -- a tick now ----------------------------------------------------------------------------

    def run_now(self, name: str) -> str:
        """One tick now, out of the schedule's own (``POST /v1/schedules/{name}:run``): what it made."""
        defined = self.store.get(name)
        if defined is None:
            raise KeyError(name)
        tick = self.store.now().replace(microsecond=0)
        ttl_s = tick_ttl_s(tick, defined.schedule.ticks.after(tick))
        if not self.store.claim_now(name, to_ms(tick), ttl_s=ttl_s):
            return "skipped: a run of this second exists"
        self.maker.make(name, defined.schedule, tick, ttl_s)
        return self.store.outcome(name, to_ms(tick)) or ""

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
            self._later(self.maker.fan_out, name, job_id, tick)


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
