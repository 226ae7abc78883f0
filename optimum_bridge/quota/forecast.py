"""When will my data be there? Forecasts of a waiting job's start and of a batch's end (spec §11).

A job waiting in a lane starts after every job ahead of it: the jobs of the
higher lanes and the older jobs of its own (``position``). Slots come one
every interval from the account's next free slot (pause, pacer and quota log
included), so its start is ``next slot + position x interval``; a retry due
later starts no earlier than its due time. One read-only step
(``lua/forecast.lua``) gives all of it. The estimate holds for a steady
backlog; jobs submitted later at a higher priority move it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from optimum_bridge.keys import PRIORITIES, JobField, Keys, text
from optimum_bridge.quota.rate import STATE_FIELD, Quota
from optimum_bridge.schemas import WAITING_STATES
from optimum_bridge.steps import Command, Pipeline, Script, Steps, SyncDriver


@dataclass(frozen=True)
class Forecast:
    """Where a job stands: jobs ahead of it, and when it should start."""

    position: int
    estimated_start_at: datetime


def _moment(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class Backlog:
    """An account's lanes now: how many wait in each, when the next slot is, and when each lane's last starts."""

    now_ms: int
    next_slot_ms: int
    interval_ms: float
    waiting: dict[str, int]

    def last_start(self, priority: str) -> datetime | None:
        """When the last job waiting in ``priority``'s lane should start (after every higher lane), or None."""
        if not self.waiting.get(priority):
            return None
        ahead = sum(self.waiting[p] for p in PRIORITIES[: PRIORITIES.index(priority) + 1])
        return _moment(self.next_slot_ms + (ahead - 1) * self.interval_ms)


@dataclass(frozen=True)
class ForecastSteps:
    """The forecasts as steps (``optimum_bridge.steps``), for the blocking and the asyncio client alike."""

    keys: Keys
    quotas: dict[str, Quota]

    def _ask(self, account: str, positions: list[tuple[str, str]]) -> Steps[tuple[int, int, int, list[int]]]:
        """``(now, next slot, interval in force, ahead of each (priority, seq))`` for ``account``, in one round trip."""
        raw = yield from self._read(account, positions)
        return raw[0], raw[1], raw[2], raw[6:]

    def _quota(self, account: str) -> Steps[Quota | None]:
        """The account's quota: known to this process, or (an account created at runtime, spec §12a) as the
        workers stored it for the scripts (its limiter state; ``keys.quotas`` if a worker of the previous
        version stored it); None when neither knows it."""
        known = self.quotas.get(account)
        if known is not None:
            return known
        raw = yield Command("HGET", (self.keys.limiter_state(account), STATE_FIELD))
        if raw is None:
            raw = yield Command("HGET", (self.keys.quotas, account))
        if raw is None:
            return None
        return Quota.of_args(text(raw))

    def _read(self, account: str, positions: list[tuple[str, str]]) -> Steps[list[int]]:
        """The script's answer: now, next slot, the interval in force (the learned limit applied), the three
        lane sizes, then ahead of each position."""
        quota = yield from self._quota(account)
        if quota is None:
            raise KeyError(account)
        keys = [
            *self.keys.lanes(account),
            self.keys.limiter_log(account),
            self.keys.limiter_state(account),
        ]
        args: list[str | int | float] = [*quota.args()]
        for priority, seq in positions:
            args += [PRIORITIES.index(priority) + 1, seq]
        return [int(value) for value in (yield Script("forecast", keys, args))]

    def backlog(self, account: str) -> Steps[Backlog]:
        """The account's lanes and next slot, read in one step (``KeyError`` for an unknown account)."""
        raw = yield from self._read(account, [])
        sizes = dict(zip(PRIORITIES, raw[3:6], strict=True))
        return Backlog(raw[0], raw[1], raw[2], sizes)

    def job(self, job_id: str, fields: dict[str, str]) -> Steps[Forecast | None]:
        """The forecast of a job from its hash's fields; None unless it waits for a slot."""
        if fields.get(JobField.status) not in WAITING_STATES:
            return None
        leader = fields.get(JobField.coalesced_with)
        if leader:  # it waits on another job's call: it starts when that one does
            raw = yield Command("HGETALL", (self.keys.job(leader),))
            return (yield from self.job(leader, {text(k): text(v) for k, v in raw.items()})) if raw else None
        account = fields.get(JobField.account, "default")
        if (yield from self._quota(account)) is None:
            return None
        dispatched = fields.get(JobField.dispatched_at)
        _, next_slot, interval, ahead = yield from self._ask(
            account, [(fields[JobField.priority], fields[JobField.seq])]
        )
        lookups = (
            Command("ZSCORE", (self.keys.dispatched, job_id)),
            Command("ZSCORE", (self.keys.delayed(account), job_id)),
        )
        handed_off, due = yield Pipeline(lookups, transaction=False)
        if handed_off is not None and dispatched:
            return Forecast(0, _moment(int(dispatched)))  # its slot is given; a worker is taking it
        start = next_slot + ahead[0] * interval
        return Forecast(ahead[0], _moment(max(start, int(due or 0))))

    def batch_done(self, account: str, last_seqs: dict[str, str]) -> Steps[datetime | None]:
        """When the last waiting job of a batch should start, from the batch's last place in each lane."""
        if not last_seqs or (yield from self._quota(account)) is None:
            return None
        positions = [(priority, str(int(seq) + 1)) for priority, seq in last_seqs.items()]
        now, next_slot, interval, ahead = yield from self._ask(account, positions)
        last = max(ahead)
        if last == 0:  # nothing of it waits for a slot any more: it ends with the calls under way
            return _moment(now)
        return _moment(next_slot + (last - 1) * interval)


class Forecaster:
    """Reads the lanes and the quota of an account to forecast starts (``ForecastSteps`` on a blocking client)."""

    def __init__(self, client: redis.Redis, keys: Keys, quotas: dict[str, Quota]) -> None:
        self.steps = ForecastSteps(keys, quotas)
        self._run = SyncDriver(client)

    def backlog(self, account: str) -> Backlog:
        """The account's lanes and next slot, read in one step (``KeyError`` for an unknown account)."""
        return self._run(self.steps.backlog(account))

    def job(self, job_id: str, fields: dict[str, str]) -> Forecast | None:
        """The forecast of a job from its hash's fields; None unless it waits for a slot."""
        return self._run(self.steps.job(job_id, fields))

    def batch_done(self, account: str, last_seqs: dict[str, str]) -> datetime | None:
        """When the last waiting job of a batch should start, from the batch's last place in each lane."""
        return self._run(self.steps.batch_done(account, last_seqs))
