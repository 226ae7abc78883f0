"""What a schedule will do next (spec §15): its next ticks (UTC and local), when the next run should be
done, and a warning when its runs would outlast the gap between ticks at the account's quota.

The estimate is the next tick plus the last run's size times the account's
slot interval (one call per slot under a backlog, §11): a run of 300 trips at
30/m takes ten minutes whatever else waits, so a schedule every 5 minutes
would pile up, and says so.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from optimum_bridge.schedules.store import Defined, ScheduleStore, from_ms
from optimum_bridge.settings import Settings

UPCOMING = 5


class TickTimes(BaseModel):
    """One tick, in UTC and in the schedule's zone."""

    utc: datetime
    local: datetime


class LastRun(BaseModel):
    """The last tick that ran: what it made."""

    tick: datetime
    batch_id: str | None = None
    size: int | None = Field(None, description="calls it made (the source included)")
    error: str | None = None


class ScheduleView(BaseModel):
    """A schedule as ``GET /v1/schedules/{name}``, the CLI and ``/ui`` show it."""

    name: str
    origin: str = Field(description="file (the accounts file: read-only over HTTP) or api")
    paused: bool
    schedule: dict[str, Any]
    next_ticks: list[TickTimes]
    estimated_done_at: datetime | None = Field(None, description="when the next run should be done")
    run_duration_s: float | None = Field(None, description="the last run's size at the account's quota")
    warning: str | None = None
    last_run: LastRun | None = None


def describe(
    name: str, defined: Defined, state: dict[str, str], *, now: datetime, next_ms: int | None, interval_s: float
) -> ScheduleView:
    """The view of one schedule, from its definition, its state and the account's slot interval."""
    schedule = defined.schedule
    ticks = schedule.ticks
    first = from_ms(next_ms) if next_ms is not None else ticks.after(now)
    upcoming = [first, *ticks.upcoming(first, UPCOMING - 1)]
    last = _last_run(state)
    view = ScheduleView(
        name=name,
        origin=defined.origin,
        paused=bool(state.get("paused")),
        schedule=schedule.model_dump(mode="json", exclude_none=True),
        next_ticks=[TickTimes(utc=tick, local=ticks.local(tick)) for tick in upcoming],
        last_run=last,
    )
    if last is None or last.size is None:
        return view
    duration_s = last.size * interval_s
    gap_s = min((b - a).total_seconds() for a, b in itertools.pairwise(upcoming))
    warning = None
    if duration_s > gap_s:
        warning = (
            f"a run of {last.size} calls takes {_span(duration_s)} at account {schedule.account!r}'s quota, "
            f"longer than the {_span(gap_s)} between ticks"
        )
    return view.model_copy(
        update={
            "estimated_done_at": first + timedelta(seconds=duration_s),
            "run_duration_s": round(duration_s, 3),
            "warning": warning,
        }
    )


def _last_run(state: dict[str, str]) -> LastRun | None:
    if not state.get("last_tick"):
        return None
    size = state.get("last_size")
    return LastRun(
        tick=from_ms(int(state["last_tick"])),
        batch_id=state.get("last_batch") or None,
        size=int(size) if size else None,
        error=state.get("last_error") or None,
    )


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def show(store: ScheduleStore, settings: Settings, name: str, defined: Defined) -> ScheduleView:
    """The view of a stored schedule, on the Redis clock, with its account's slot interval."""
    quotas = settings.quotas()
    account = defined.schedule.account
    interval_s = quotas[account].interval_s if account in quotas else 0.0
    return describe(
        name, defined, store.state(name), now=store.now(), next_ms=store.next_tick_ms(name), interval_s=interval_s
    )
