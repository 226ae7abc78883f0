"""Schedules in Redis (spec §15): definitions, state, the due set, and the atomic claim of a tick.

- ``keys.schedules`` (hash): each schedule's definition as JSON, with where it
  comes from (``file``: the accounts file, read-only over HTTP; ``api``).
- ``keys.schedules_due`` (sorted set): each schedule's next tick (ms). Every
  worker's upkeep reads the due ones in one script (``lua/schedules_due.lua``),
  which also notes when a worker last looked, so a span in which none did (an
  outage) is recognised once, atomically, for the ``missed`` policy.
- ``keys.schedule_tick`` (string, SET NX with a TTL): one tick, claimed in the
  same step as the schedule moves past it (``lua/schedule_claim.lua``); its
  value says what the tick made. Nothing waits for a lock to time out.
- ``keys.schedule`` (hash): a schedule's state: ``paused``, and the last run's
  ``last_tick``, ``last_batch``, ``last_size``, ``last_error``, ``source_job``.
- ``keys.schedules_sources`` (sorted set): ticks waiting on their source job.
- ``keys.schedules_making`` (sorted set): ticks claimed by a worker whose batch
  is not recorded yet; if that worker's heartbeat stops, another worker takes
  the tick over (``lua/schedule_takeover.lua``), so a SIGKILL between the
  claim and the batch loses no tick.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import redis
from pydantic import BaseModel, ConfigDict, ValidationError

from optimum_bridge.errors import first_problem
from optimum_bridge.keys import Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.schedules.model import Schedule

log = logging.getLogger(__name__)
Origin = Literal["file", "api"]
#: Who claims a manual run's tick (and a runner outside a worker's): never taken over, its caller answers for it.
MANUAL = "manual"
#: The most due ticks (and waiting sources) one look returns; the rest come at the next look, moments later.
DUE_LIMIT = 200


class Defined(BaseModel):
    """A schedule as stored: the definition and where it comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schedule: Schedule
    origin: Origin = "api"


@dataclass(frozen=True)
class Due:
    """One look at the due set: the Redis time, the last outage, the due ticks and waiting sources."""

    now_ms: int
    outage: tuple[int, int]
    first_ms: int | None
    ticks: list[tuple[str, int]]
    sources: list[str]
    making: list[str]  # ticks claimed a while ago whose batch is not recorded: is their worker alive?


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of a tick (ticks fall on whole seconds)."""
    return round(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    """The UTC moment of epoch milliseconds."""
    return datetime.fromtimestamp(ms / 1000, UTC)


class ScheduleStore:
    """Reads and writes schedules, their state and their ticks."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._due = scripts.register(client, "schedules_due")
        self._claim = scripts.register(client, "schedule_claim")
        self._takeover = scripts.register(client, "schedule_takeover")

    def now(self) -> datetime:
        """The Redis server's clock (every process agrees on it)."""
        seconds, micros = self._redis.time()
        return datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, UTC)

    # -- definitions ------------------------------------------------------------------------

    def put(self, name: str, schedule: Schedule, *, origin: Origin = "api") -> None:
        """Create or replace a schedule; its next tick is the first after now."""
        defined = Defined(schedule=schedule, origin=origin)
        next_ms = to_ms(schedule.ticks.after(self.now()))
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._keys.schedules, name, defined.model_dump_json(exclude_defaults=True))
            pipe.zadd(self._keys.schedules_due, {name: next_ms})
            pipe.execute()

    def sync_file(self, schedules: dict[str, Schedule]) -> None:
        """Make the accounts file's schedules those in Redis: new or changed ones (re)start from now,
        unchanged ones keep their next tick (so ticks missed while no worker ran are recognised)."""
        stored = self.all()
        for name, schedule in schedules.items():
            current = stored.get(name)
            known = self._redis.zscore(self._keys.schedules_due, name) is not None
            same = current is not None and current.schedule.model_dump() == schedule.model_dump()
            if not same or current is None or current.origin != "file" or not known:
                self.put(name, schedule, origin="file")
        for name, defined in stored.items():
            if defined.origin == "file" and name not in schedules:
                self.delete(name)

    def get(self, name: str) -> Defined | None:
        """A schedule, or None."""
        raw = self._redis.hget(self._keys.schedules, name)
        return Defined.model_validate_json(raw) if raw is not None else None

    def all(self) -> dict[str, Defined]:
        """Every schedule that loads, by name (one that no longer does is logged and left out)."""
        found = {}
        for name, value in sorted(self._redis.hgetall(self._keys.schedules).items()):
            try:
                found[text(name)] = Defined.model_validate_json(value)
            except ValidationError as exc:
                log.warning("schedule %s: its stored definition no longer loads (%s)", text(name), first_problem(exc))
        return found

    def delete(self, name: str) -> bool:
        """Remove a schedule and its state; whether it existed."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._keys.schedules, name)
            pipe.zrem(self._keys.schedules_due, name)
            pipe.delete(self._keys.schedule(name))
            removed, *_ = pipe.execute()
        return bool(removed)

    def forget(self, name: str) -> None:
        """Drop a due entry whose schedule is gone."""
        self._redis.zrem(self._keys.schedules_due, name)

    # -- state ------------------------------------------------------------------------------

    def state(self, name: str) -> dict[str, str]:
        """The schedule's state hash, decoded."""
        return {text(k): text(v) for k, v in self._redis.hgetall(self._keys.schedule(name)).items()}

    def set_paused(self, name: str, paused: bool) -> None:
        """Pause (its ticks pass without a batch) or resume a schedule."""
        if paused:
            self._redis.hset(self._keys.schedule(name), "paused", "1")
        else:
            self._redis.hdel(self._keys.schedule(name), "paused")

    def next_tick_ms(self, name: str) -> int | None:
        """The schedule's next tick (ms), as the due set has it."""
        score = self._redis.zscore(self._keys.schedules_due, name)
        return int(score) if score is not None else None

    def outcome(self, name: str, tick_ms: int) -> str | None:
        """What a tick made (a batch id, ``source:<job id>``, or why none), or None if never claimed."""
        raw = self._redis.get(self._keys.schedule_tick(name, tick_ms))
        return text(raw) if raw is not None else None

    def record(self, name: str, tick_ms: int, outcome: str, *, ttl_s: int, **fields: str | int) -> None:
        """Note what a tick made, on the tick's key and in the schedule's state."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.schedule_tick(name, tick_ms), outcome, ex=ttl_s)
            pipe.zrem(self._keys.schedules_making, f"{name}|{tick_ms}")
            if fields:
                mapping: dict[str, str | int] = {"last_tick": tick_ms, **fields}
                pipe.hset(self._keys.schedule(name), mapping=mapping)  # type: ignore[arg-type]  # redis-py's invariant Mapping
            pipe.execute()

    def clear(self, name: str, *fields: str) -> None:
        """Remove state fields (a source job once its tick's batch is made)."""
        self._redis.hdel(self._keys.schedule(name), *fields)

    # -- ticks ------------------------------------------------------------------------------

    def due(self, *, outage_ms: int, stale_ms: int, limit: int = DUE_LIMIT) -> Due:
        """One look: due ticks, waiting sources, claims older than ``stale_ms``, the last outage (one script)."""
        keys = [
            self._keys.schedules_due,
            self._keys.schedules_seen,
            self._keys.schedules_outage,
            self._keys.schedules_sources,
            self._keys.schedules_making,
        ]
        reply = self._due(keys=keys, args=[outage_ms, limit, stale_ms])
        now, outage_from, outage_to, first, due_count, source_count = (int(value) for value in reply[:6])
        pairs = reply[6 : 6 + 2 * due_count]
        ticks = [(text(pairs[i]), int(pairs[i + 1])) for i in range(0, len(pairs), 2)]
        rest = [text(member) for member in reply[6 + 2 * due_count :]]
        first_ms = first if first >= 0 else None
        return Due(now, (outage_from, outage_to), first_ms, ticks, rest[:source_count], rest[source_count:])

    def claim(self, name: str, *, expected_ms: int, tick_ms: int | None, next_ms: int, ttl_s: int, owner: str) -> bool:
        """Move ``name`` from ``expected_ms`` to ``next_ms`` and claim ``tick_ms`` for ``owner``, atomically;
        whether ``owner`` now has the tick."""
        tick_key = self._keys.schedule_tick(name, tick_ms if tick_ms is not None else 0)
        keys = [self._keys.schedules_due, tick_key, self._keys.schedules_making]
        args: list[str | int] = [name, expected_ms, "" if tick_ms is None else tick_ms, next_ms, ttl_s, owner]
        return bool(self._claim(keys=keys, args=args))

    def take_over(self, member: str, *, dead: str, owner: str) -> bool:
        """Take a tick claimed by ``dead`` (its batch not made) for ``owner``; only one caller gets True."""
        name, _, tick = member.rpartition("|")
        keys = [self._keys.schedule_tick(name, int(tick)), self._keys.schedules_making]
        return bool(self._takeover(keys=keys, args=[f"claimed:{dead}", owner, member]))

    def heartbeat_s(self, worker: str) -> float | None:
        """When (epoch s, Redis clock) ``worker`` last said it was alive (the upkeep's heartbeat), or None."""
        score = self._redis.zscore(self._keys.workers, worker)
        return float(score) if score is not None else None

    def made(self, member: str) -> None:
        """A claimed tick no longer needs watching (recorded, or its schedule is gone)."""
        self._redis.zrem(self._keys.schedules_making, member)

    def claim_now(self, name: str, tick_ms: int, *, ttl_s: int) -> bool:
        """Claim a tick out of the schedule's own (a manual run); the schedule's next tick is unchanged."""
        tick_key = self._keys.schedule_tick(name, tick_ms)
        return bool(self._redis.set(tick_key, f"claimed:{MANUAL}", nx=True, ex=ttl_s))

    def wait_source(self, name: str, tick_ms: int, job_id: str, *, ttl_s: int) -> None:
        """The tick's source job is submitted: note it, and look at it at the next turn."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.schedule_tick(name, tick_ms), f"source:{job_id}", ex=ttl_s)
            pipe.hset(self._keys.schedule(name), mapping={"last_tick": tick_ms, "source_job": job_id})
            pipe.zadd(self._keys.schedules_sources, {f"{name}|{tick_ms}": 0})
            pipe.zrem(self._keys.schedules_making, f"{name}|{tick_ms}")
            pipe.execute()

    def look_again(self, member: str, at_ms: int) -> None:
        """Look at a waiting source again at ``at_ms``."""
        self._redis.zadd(self._keys.schedules_sources, {member: at_ms}, xx=True)

    def source_waiting(self, name: str, tick_ms: int) -> bool:
        """Whether the tick still waits on its source job, or a worker is making its batch from it."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zscore(self._keys.schedules_sources, f"{name}|{tick_ms}")
            pipe.zscore(self._keys.schedules_making, f"{name}|{tick_ms}")
            return any(score is not None for score in pipe.execute())

    def take_source(self, member: str, *, owner: str, ttl_s: int) -> bool:
        """Take a finished source's tick for its batch; only one caller gets True. The tick is then claimed by
        ``owner`` as a scheduled one is, so if ``owner`` dies before the batch, another runs the tick again."""
        if not self._redis.zrem(self._keys.schedules_sources, member):
            return False
        name, _, tick = member.rpartition("|")
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.schedule_tick(name, int(tick)), f"claimed:{owner}", ex=ttl_s)
            if owner != MANUAL:
                pipe.zadd(self._keys.schedules_making, {member: int(self.now().timestamp() * 1000)})
            pipe.execute()
        return True
