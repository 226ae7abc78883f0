"""When a schedule's ticks fall (spec §15): a 5-field cron in an IANA zone, or a fixed period.

Cron ticks come from ``cronsim`` on ``zoneinfo`` datetimes, with daylight
saving time as §15 says: a local time that does not exist (the spring
change) runs at the first instant after it, which is what cronsim yields;
a local time that occurs twice (the autumn change) runs once, at its first
occurrence, so a candidate in the repeated hour's second pass (``fold = 1``
once it is read back from UTC) is dropped here. ``every`` ticks are the
multiples of the period since the epoch, so every worker computes the same
ones without agreeing on anything. Every moment in and out is UTC.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim

_EVERY = re.compile(r"^([1-9][0-9]{0,5})([smh])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
#: Candidates looked at before a cron is declared to never tick (``*`` minutes over a repeated hour drop 60).
_SEARCH = 4000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_every(text: str) -> int:
    """``"30s"``, ``"15m"``, ``"1h"`` in seconds; ``ValueError`` naming the expected form."""
    match = _EVERY.match(text.strip())
    if match is None:
        raise ValueError(f'{text!r} is not a period: expected a number and s, m or h, e.g. "30s", "15m", "1h"')
    return int(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class Ticks:
    """A schedule's ticks: ``cron`` in ``zone``, or one every ``every_s`` seconds."""

    zone: ZoneInfo
    cron: str | None = None
    every_s: int | None = None

    def after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment``."""
        if self.every_s is not None:
            step = timedelta(seconds=self.every_s)
            return _EPOCH + ((moment - _EPOCH) // step + 1) * step
        for tick in self._kept(CronSim(self._cron, moment.astimezone(self.zone))):
            if tick > moment:
                return tick
        raise ValueError(f"cron {self.cron!r} never ticks")

    def before(self, moment: datetime) -> datetime:
        """The last tick strictly before ``moment``."""
        if self.every_s is not None:
            step = timedelta(seconds=self.every_s)
            return _EPOCH + (-((_EPOCH - moment) // step) - 1) * step
        start = (moment + timedelta(minutes=1)).astimezone(self.zone)  # cronsim starts from the minute
        for tick in self._kept(CronSim(self._cron, start, reverse=True)):
            if tick < moment:
                return tick
        raise ValueError(f"cron {self.cron!r} never ticks")

    def at_or_before(self, moment: datetime) -> datetime:
        """The last tick at ``moment`` or before (ticks fall on whole seconds)."""
        return self.before(moment + timedelta(milliseconds=1))

    def upcoming(self, moment: datetime, count: int) -> list[datetime]:
        """The ``count`` ticks after ``moment``."""
        ticks: list[datetime] = []
        for _ in range(count):
            moment = self.after(moment)
            ticks.append(moment)
        return ticks

    def local(self, moment: datetime) -> datetime:
        """``moment`` in the schedule's zone."""
        return moment.astimezone(self.zone)

    @property
    def interval_s(self) -> float:
        """The period, or for a cron the shortest gap between its next few ticks (for the overrun warning)."""
        if self.every_s is not None:
            return float(self.every_s)
        ticks = self.upcoming(datetime.now(UTC), 6)
        return min((b - a).total_seconds() for a, b in itertools.pairwise(ticks))

    @property
    def _cron(self) -> str:
        if self.cron is None:
            raise ValueError("neither cron nor every")
        return self.cron

    def _kept(self, candidates: Iterator[datetime]) -> Iterator[datetime]:
        """The candidates in UTC, without the second pass of a repeated local time."""
        for _, candidate in zip(range(_SEARCH), candidates, strict=False):
            tick = candidate.astimezone(UTC)
            if tick.astimezone(self.zone).fold == 0:
                yield tick
