"""``optimum-bridge schedules list|show|run|pause|resume`` (spec §15): see and steer schedules from a shell.

Reads and writes Redis directly, as the other commands do (no ingress
needed): ``list`` prints one line per schedule with its next tick in its own
zone, its last run and any warning; ``show`` prints the same JSON as
``GET /v1/schedules/{name}``; ``run`` makes one tick now and prints its batch
id (or its source job's); ``pause`` and ``resume`` let ticks pass or run again.
"""

from __future__ import annotations

import argparse
from typing import Any

from optimum_bridge.errors import BridgeError
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schedules.outlook import ScheduleView, show
from optimum_bridge.schedules.runner import ScheduleRunner, manual_runner
from optimum_bridge.schedules.store import Defined
from optimum_bridge.settings import load_settings


class NoSchedule(BridgeError):
    """No schedule of that name."""


def add_schedule_commands(sub: Any) -> None:
    """The ``schedules`` subcommand and its actions."""
    schedules = sub.add_parser("schedules", help="list, show, run, pause or resume schedules")
    actions = schedules.add_subparsers(dest="schedules_command", required=True, metavar="ACTION")
    actions.add_parser("list", help="one line per schedule: next tick, last run, warning").set_defaults(
        handler=cmd_schedules_list
    )
    for name, help_text, handler in (
        ("show", "a schedule's next 5 ticks, its finish forecast and last run (JSON)", cmd_schedules_show),
        ("run", "one tick now: prints its batch id", cmd_schedules_run),
        ("pause", "let its ticks pass without a batch", cmd_schedules_pause),
        ("resume", "run its ticks again", cmd_schedules_resume),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("name", metavar="NAME")
        action.set_defaults(handler=handler)


def _open() -> tuple[BridgeClient, ScheduleRunner]:
    client = BridgeClient(load_settings())
    runner = manual_runner(client)
    runner.sync()
    return client, runner


def _defined(runner: ScheduleRunner, name: str) -> Defined:
    defined = runner.store.get(name)
    if defined is None:
        raise NoSchedule(f"no schedule {name!r}")
    return defined


def line(view: ScheduleView) -> str:
    """One schedule in one line."""
    when = view.schedule.get("cron") or f"every {view.schedule['every']}"
    state = "paused" if view.paused else f"next {view.next_ticks[0].local.isoformat(timespec='seconds')}"
    last = view.last_run
    ran = "never ran"
    if last is not None:
        ran = f"last {last.tick.isoformat()}: " + (f"batch {last.batch_id}" if last.batch_id else last.error or "none")
    done = ""
    if view.estimated_done_at is not None and not view.paused:
        done = f", done ~{view.estimated_done_at.isoformat(timespec='seconds')}"
    warning = f"  WARNING: {view.warning}" if view.warning else ""
    account = view.schedule.get("account", "default")
    return f"{view.name} ({view.origin}, {when}, account {account}): {state}{done}; {ran}{warning}"


def cmd_schedules_list(args: argparse.Namespace, extra: list[str]) -> int:
    """Every schedule, one line each."""
    client, runner = _open()
    with client:
        defined = runner.store.all()
        if not defined:
            print("no schedules")
        for name, schedule in defined.items():
            print(line(show(runner.store, client.settings, name, schedule)))
    return 0


def cmd_schedules_show(args: argparse.Namespace, extra: list[str]) -> int:
    """A schedule as ``GET /v1/schedules/{name}`` shows it."""
    client, runner = _open()
    with client:
        print(show(runner.store, client.settings, args.name, _defined(runner, args.name)).model_dump_json(indent=2))
    return 0


def cmd_schedules_run(args: argparse.Namespace, extra: list[str]) -> int:
    """One tick now; prints what it made."""
    client, runner = _open()
    with client:
        _defined(runner, args.name)
        outcome = runner.run_now(args.name)
    print(outcome)
    return 1 if outcome.startswith(("failed", "skipped")) else 0


def _pause(name: str, paused: bool) -> int:
    client, runner = _open()
    with client:
        _defined(runner, name)
        runner.store.set_paused(name, paused)
    print(f"{name}: {'paused' if paused else 'resumed'}")
    return 0


def cmd_schedules_pause(args: argparse.Namespace, extra: list[str]) -> int:
    """Pause a schedule."""
    return _pause(args.name, True)


def cmd_schedules_resume(args: argparse.Namespace, extra: list[str]) -> int:
    """Resume a schedule."""
    return _pause(args.name, False)
