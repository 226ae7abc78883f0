"""``optimum-bridge demo --schedule``: the nightly sync as a schedule, two ticks of it, forecasts beside finishes.

The schedule is the integrator's sync (spec §15): every tick fetches the
fleet (``source``), then yesterday's trips (Europe/Paris) of every vehicle
still in it (``for_each`` + ``operation``), as one bulk batch with one signed
``batch.completed`` callback. It ticks ``every = "20s"`` here instead of
``cron = "0 2 * * *"``. For each of two ticks the demo shows when the tick
fell, when its batch was made, the schedule's forecast of its finish (from
the account's quota and the last run's size, so none before the first run),
the batch's own forecast once made, and when it finished. Exit 0 when each
tick made exactly one batch, every trips call succeeded and each batch
called back once.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from rich.console import Console
from rich.table import Table

from optimum_bridge.demo.receiver import callback_counts
from optimum_bridge.demo.stack import Plan, Running
from optimum_bridge.devstack import wait_until
from optimum_bridge.errors import BridgeError
from optimum_bridge.keys import Keys, text
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schedules.model import Schedule
from optimum_bridge.schedules.outlook import show
from optimum_bridge.schedules.store import ScheduleStore, from_ms

NAME = "nightly-sync"
EVERY = "20s"
TICKS = 2
_BATCH_ID = re.compile(r"^[0-9a-f]{32}$")


def nightly_sync(callback_url: str) -> Schedule:
    """The schedule, as ``[schedules.nightly-sync]`` in the accounts file or ``PUT /v1/schedules/nightly-sync``."""
    return Schedule.model_validate(
        {
            "every": EVERY,  # the real one: cron = "0 2 * * *"
            "timezone": "Europe/Paris",
            "source": {"method": "GET", "path": "/Vehicles"},
            "for_each": "[?status != 'OUT_FLEET'].registrationNumber",
            "operation": {
                "method": "GET",
                "path": "/Geolocation/Trips",
                "query": {
                    "registrationNumber": "{{ item }}",
                    "startDate": "{{ tick | date('%Y-%m-%d', days=-1) }}T00:00:00",
                    "endDate": "{{ tick | date('%Y-%m-%d') }}T00:00:00",
                },
            },
            "callback": {"url": callback_url},
            "metadata": {"erp": "demo"},
        }
    )


@dataclass(frozen=True)
class TickRun:
    """One tick: when it fell, its batch, the forecasts of its finish and the finish."""

    tick: datetime
    batch_id: str
    size: int
    created_at: datetime
    schedule_forecast: datetime | None  # the schedule's, before the tick (none before a first run)
    batch_forecast: datetime | None  # the batch's, once made
    finished_at: datetime | None
    succeeded: int
    callbacks: int


def run_schedule_demo(running: Running, plan: Plan, client: BridgeClient, console: Console) -> int:
    """Put the schedule, follow two of its ticks, print them; the exit code."""
    store = ScheduleStore(running.redis, Keys(client.settings.key_prefix))
    store.put(NAME, nightly_sync(running.receiver.url))
    console.print(f"schedule  {NAME}: every {EVERY}, Europe/Paris, fleet then yesterday's trips of each vehicle in it")
    runs = [_follow_tick(store, client, running, plan, console) for _ in range(TICKS)]
    console.print(_table(runs))
    made = _batches_by_tick(client, running)
    problems = [f"tick {r.tick:%H:%M:%S}: {made.get(r.tick, 0)} batches" for r in runs if made.get(r.tick) != 1]
    problems += [f"tick {r.tick:%H:%M:%S}: {r.size - r.succeeded} calls failed" for r in runs if r.succeeded < r.size]
    problems += [f"tick {r.tick:%H:%M:%S}: {r.callbacks} batch callbacks" for r in runs if r.callbacks != 1]
    if problems:
        print(f"demo: FAILED: {'; '.join(problems)}", file=sys.stderr)
        return 1
    console.print(f"demo: OK: {TICKS} ticks, one batch each, every trips call succeeded, each batch called back once")
    return 0


def _batches_by_tick(client: BridgeClient, running: Running) -> dict[datetime, int]:
    """How many batches name each tick of the schedule, counted from the account's recent batches."""
    counts: dict[datetime, int] = {}
    recent = cast(list[bytes], running.redis.zrange(Keys(client.settings.key_prefix).recent_batches(), 0, -1))
    for raw in recent:
        metadata = client.get_batch(text(raw)).metadata
        if metadata.get("schedule") == NAME:
            tick = datetime.fromisoformat(str(metadata["tick"]))
            counts[tick] = counts.get(tick, 0) + 1
    return counts


def _follow_tick(store: ScheduleStore, client: BridgeClient, running: Running, plan: Plan, console: Console) -> TickRun:
    defined = store.get(NAME)
    if defined is None:
        raise BridgeError(f"schedule {NAME} vanished")
    view = show(store, client.settings, NAME, defined)
    forecast = view.estimated_done_at
    tick_ms = store.next_tick_ms(NAME) or 0
    console.print(f"tick      {from_ms(tick_ms):%H:%M:%S} UTC next; schedule forecast of its finish: {_at(forecast)}")
    found = wait_until(lambda: _batch_of(store, tick_ms), timeout=60 + plan.wait_s(), what="the tick's batch")
    outcome = str(found)
    batch = client.get_batch(outcome)
    console.print(f"batch     {outcome} made: {batch.total} trips calls, batch forecast {_at(batch.estimated_done_at)}")
    done = client.wait_batch(outcome, timeout=plan.wait_s())
    wait_until(lambda: callback_counts(running.receiver, outcome).batch >= 1, timeout=30, what="batch.completed")
    return TickRun(
        tick=from_ms(tick_ms),
        batch_id=outcome,
        size=done.total,
        created_at=batch.submitted_at,
        schedule_forecast=forecast,
        batch_forecast=batch.estimated_done_at,
        finished_at=done.finished_at,
        succeeded=done.counts.succeeded,
        callbacks=callback_counts(running.receiver, outcome).batch,
    )


def _batch_of(store: ScheduleStore, tick_ms: int) -> str | None:
    outcome = store.outcome(NAME, tick_ms) or ""
    if outcome.startswith(("failed", "skipped")):
        raise BridgeError(f"tick {from_ms(tick_ms):%H:%M:%S}: {outcome}")
    return outcome if _BATCH_ID.match(outcome) else None


def _at(moment: datetime | None, *, none: str = "none yet (no run to size it)") -> str:
    return f"{moment:%H:%M:%S.%f}"[:-5] + " UTC" if moment is not None else none


def _off(finished: datetime | None, forecast: datetime | None) -> str:
    if finished is None or forecast is None:
        return "—"
    return f"{(finished - forecast).total_seconds():+.1f} s"


def _table(runs: list[TickRun]) -> Table:
    table = Table(title=f"schedule {NAME}: forecasts against finishes (UTC)")
    columns = ("tick", "batch made", "calls", "schedule forecast", "off by", "batch forecast", "off by", "finished")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for run in runs:
        table.add_row(
            f"{run.tick:%H:%M:%S}",
            f"+{(run.created_at - run.tick).total_seconds():.2f} s",
            str(run.size),
            _at(run.schedule_forecast, none="—").removesuffix(" UTC"),
            _off(run.finished_at, run.schedule_forecast),
            _at(run.batch_forecast, none="—").removesuffix(" UTC"),
            _off(run.finished_at, run.batch_forecast),
            _at(run.finished_at, none="—").removesuffix(" UTC"),
        )
    return table
