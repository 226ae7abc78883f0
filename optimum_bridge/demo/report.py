"""What the demo shows: job tracking with a live progress bar, then the summary table and verdict.

Progress polls job states through ``BridgeClient.get`` (only jobs not yet
finished), so it tells the same story as a producer polling; ``during`` runs
on every poll (the demo submits its urgent operation from there). Without a
terminal, or with ``--no-progress``, it prints a plain line every few seconds.
The verdict also holds the bridge to spec §10 and §11: the urgent operation
started within one slot interval (+ ``URGENT_GRACE_S``) of its submission, and
the batch's ``batch.completed`` callback came exactly once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimum_bridge.errors import JobNotFound
from optimum_bridge.producer import BridgeClient
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.schemas import JobStatus

POLL_S = 0.25
PLAIN_EVERY_S = 2.0
#: How much longer than one slot interval the urgent operation may wait (spec §11's tolerance).
URGENT_GRACE_S = 1.0


class JobTracker:
    """Final statuses of a set of jobs, filled in by ``poll``."""

    def __init__(self, client: BridgeClient, job_ids: list[str]) -> None:
        self._client = client
        self.job_ids = list(job_ids)
        self.final: dict[str, JobStatus] = {}

    def add(self, job_ids: list[str]) -> None:
        """Track more jobs."""
        self.job_ids += job_ids

    def poll(self) -> int:
        """Read the jobs not yet finished; returns how many are finished."""
        for job_id in self.job_ids:
            if job_id in self.final:
                continue
            try:
                status = self._client.get(job_id)
            except JobNotFound:
                continue  # not written yet, or expired: counted as "other"
            if status.finished:
                self.final[job_id] = status
        return len(self.final)

    @property
    def done(self) -> bool:
        """Whether every tracked job is finished."""
        return len(self.final) >= len(self.job_ids)

    def states(self) -> Counter[str]:
        """Jobs by final state; unfinished ones count as ``other``."""
        counts: Counter[str] = Counter(str(status.status) for status in self.final.values())
        counts["other"] += len(self.job_ids) - len(self.final)
        return counts

    def span_s(self) -> float:
        """Seconds from the first submission to the last finish (0 when nothing finished)."""
        if not self.final:
            return 0.0
        first = min(s.submitted_at for s in self.final.values())
        last = max(s.finished_at or s.submitted_at for s in self.final.values())
        return max(0.0, (last - first).total_seconds())


def follow(
    tracker: JobTracker,
    *,
    console: Console,
    live: bool,
    timeout_s: float,
    extra: Callable[[], str] = lambda: "",
    during: Callable[[JobTracker], None] = lambda tracker: None,
) -> bool:
    """Poll until every job is finished or ``timeout_s`` passes, calling ``during`` after each poll.

    Returns whether all finished (jobs ``during`` adds included).
    """
    deadline = time.monotonic() + timeout_s
    if not live:
        return _follow_plain(tracker, console=console, deadline=deadline, extra=extra, during=during)
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("operations", total=len(tracker.job_ids), detail="")
        while True:
            finished = tracker.poll()
            during(tracker)
            detail = f"failed {tracker.states()['failed']}  {extra()}"
            progress.update(task, completed=finished, total=len(tracker.job_ids), detail=detail)
            if tracker.done or time.monotonic() > deadline:
                return tracker.done
            time.sleep(POLL_S)


def _follow_plain(
    tracker: JobTracker,
    *,
    console: Console,
    deadline: float,
    extra: Callable[[], str],
    during: Callable[[JobTracker], None],
) -> bool:
    last_print = 0.0
    while True:
        finished = tracker.poll()
        during(tracker)
        now = time.monotonic()
        if tracker.done or now > deadline or now - last_print >= PLAIN_EVERY_S:
            states = tracker.states()
            console.print(
                f"progress: {finished}/{len(tracker.job_ids)} finished "
                f"({states['succeeded']} succeeded, {states['failed']} failed)  {extra()}",
                soft_wrap=True,
            )
            last_print = now
        if tracker.done or now > deadline:
            return tracker.done
        time.sleep(POLL_S)


@dataclass
class Report:
    """Every figure of the summary."""

    states: Counter[str]
    total: int
    api_calls: int
    rate_limited: int
    token_requests: int
    span_s: float
    quota: RateLimit
    margin_s: float
    callbacks_received: int
    callbacks_verified: int
    callbacks_rejected: int
    verifier: str
    elapsed_s: float
    redis: str
    workers: str
    bridge: dict[str, float]
    slot_interval_s: float
    urgent_path: str
    urgent_wait_s: float | None  # submission to started_at; None: never started (or never submitted)
    batch_forecast_s: float | None  # the first estimated_done_at, after the batch's submission
    batch_finished_s: float | None  # its actual finished_at, likewise; None: still running
    batch_callbacks: int  # verified batch.completed deliveries

    @property
    def urgent_limit_s(self) -> float:
        """The longest the urgent operation may wait: one slot interval plus the grace."""
        return self.slot_interval_s + URGENT_GRACE_S

    @property
    def achieved_per_s(self) -> float:
        """API calls per second over the processing span."""
        return self.api_calls / self.span_s if self.span_s > 0 else 0.0

    @property
    def quota_per_s(self) -> float:
        """The quota in calls per second."""
        return self.quota.limit / self.quota.window_s


def failures(report: Report) -> list[str]:
    """What went wrong, one short phrase each (empty when the run passed)."""
    problems = []
    if report.states["succeeded"] < report.total:
        problems.append(f"{report.total - report.states['succeeded']} of {report.total} operations did not succeed")
    if report.callbacks_verified < report.total:
        problems.append(f"{report.callbacks_verified} of {report.total} callbacks received and verified")
    if report.callbacks_rejected:
        problems.append(f"{report.callbacks_rejected} callbacks failed verification")
    if report.rate_limited:
        problems.append(f"{report.rate_limited} responses were 429")
    if report.urgent_wait_s is None:
        problems.append(f"the urgent operation ({report.urgent_path}) never started")
    elif report.urgent_wait_s > report.urgent_limit_s:
        problems.append(
            f"the urgent operation ({report.urgent_path}) waited {report.urgent_wait_s:.2f}s, "
            f"more than one slot interval + {URGENT_GRACE_S:g}s ({report.urgent_limit_s:.2f}s)"
        )
    if report.batch_callbacks != 1:
        problems.append(f"the batch.completed callback arrived {report.batch_callbacks} times, not once")
    return problems


def summary_table(report: Report) -> Table:
    """The end-of-run table."""
    table = Table(title="optimum-bridge demo", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("detail")
    share = report.achieved_per_s / report.quota_per_s if report.quota_per_s else 0.0
    ceiling = report.quota.window_s / (report.quota.window_s + report.margin_s)
    rows = [
        ("operations", str(report.total), "fleet, vehicles, trips, urgent"),
        ("succeeded", str(report.states["succeeded"]), ""),
        ("failed", str(report.states["failed"]), ""),
        ("other", str(report.states["other"]), "not finished"),
        ("API calls", str(report.api_calls), "accepted by the sandbox"),
        ("calls saved", str(_saved(report.bridge)), "identical reads served by one call (spec §13)"),
        ("429s", str(report.rate_limited), "rate-limited answers"),
        ("token requests", str(report.token_requests), "shared by every worker"),
        (
            "achieved rate",
            f"{report.achieved_per_s:.2f}/s",
            f"{share:.0%} of {report.quota}; limiter max {ceiling:.0%}",
        ),
        ("bridge counters", f"{_calls(report.bridge)} calls", _bridge_detail(report.bridge)),
        ("callbacks received", str(report.callbacks_received), "one per operation"),
        ("callbacks verified", str(report.callbacks_verified), f"with {report.verifier}"),
        _urgent_row(report),
        ("batch forecast", _seconds(report.batch_forecast_s), "first estimated_done_at"),
        ("batch finished", _seconds(report.batch_finished_s), _batch_detail(report)),
        ("batch callback", _received(report.batch_callbacks), "batch.completed, verified"),
        ("processing time", f"{report.span_s:.1f}s", "first submit to last result"),
        ("elapsed", f"{report.elapsed_s:.1f}s", "start-up to summary"),
        ("redis", report.redis, ""),
        ("workers", report.workers, ""),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def _seconds(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} s"


def _urgent_row(report: Report) -> tuple[str, str, str]:
    """How long the urgent operation waited (submission to its call), beside the slot interval it is held to."""
    return ("urgent operation waited", _seconds(report.urgent_wait_s, 2), f"slot interval {report.slot_interval_s:g} s")


def _batch_detail(report: Report) -> str:
    """The actual finish against the forecast (both in seconds after the batch's submission)."""
    if report.batch_finished_s is None or report.batch_forecast_s is None:
        return "after submission"
    late = report.batch_finished_s - report.batch_forecast_s
    return f"{abs(late):.1f} s {'after' if late >= 0 else 'before'} the forecast"


def _received(count: int) -> str:
    return {0: "not received", 1: "received once"}.get(count, f"received {count} times")


def _calls(counters: dict[str, float]) -> int:
    return int(sum(value for name, value in counters.items() if name.startswith("calls:")))


def _saved(counters: dict[str, float]) -> int:
    """Jobs served by another job's call or fresh answer, over every account."""
    return int(sum(v for k, v in counters.items() if k.endswith((":reads_shared", ":reads_cached"))))


def _bridge_detail(counters: dict[str, float]) -> str:
    """The bridge's own view (``metrics``), to compare with the sandbox's."""
    limited, tokens, delivered = (
        int(counters.get(k, 0)) for k in ("rate_limited", "token_requests", "callbacks:delivered")
    )
    return f"429s {limited}, tokens {tokens}, callbacks {delivered}"
