"""What the dashboard shows, read from Redis in a few round trips per account, never by scanning jobs.

Each account's figures come from its limiter (``BridgeClient.quota_state``:
calls in the window, the limit in force and what was learned, the pause), its lanes (with
``forecast.Forecaster.backlog``), its per-minute call counts and the bounded
indexes of its recent jobs and batches (``keys.recent_jobs``,
``keys.recent_batches``). Dead letters are sampled (at most ``LETTERS``) and
shown only when their job or batch belongs to the viewer's accounts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis

from optimum_bridge.callbacks.deliveries import BATCH
from optimum_bridge.ingress.ui.chart import MINUTES, Chart, layout
from optimum_bridge.ingress.ui.security import Viewer
from optimum_bridge.jobs.batches import BatchNotFound
from optimum_bridge.jobs.status import shown_status
from optimum_bridge.keys import PRIORITIES, JobField, Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.process.metrics import fold_then_read, hashes_read
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schedules.outlook import ScheduleView, show
from optimum_bridge.schedules.runner import ScheduleRunner
from optimum_bridge.schemas import JOB_STATES, WAITING_STATES, BatchStatus

JOBS, BATCHES, LETTERS = 50, 20, 50
_JOB_FIELDS = (
    JobField.status,
    JobField.priority,
    JobField.op,
    JobField.submitted_at,
    JobField.finished_at,
    JobField.coalesced_with,
)


@dataclass(frozen=True)
class Lane:
    """One lane: how many wait, and when the last of them should start."""

    priority: str
    waiting: int
    last_start: datetime | None


@dataclass(frozen=True)
class AccountView:
    """One account's quota in use, its backlog and its calls per minute."""

    name: str
    rate: str
    limit: int
    in_window: int
    paused_s: float
    interval_s: float
    learned: str  # the learned limit and why, or "—"
    lanes: list[Lane]
    delayed: int
    chart: Chart

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot in every lane."""
        return sum(lane.waiting for lane in self.lanes)

    @property
    def use_percent(self) -> int:
        """Calls in the window as a share of the limit."""
        return min(100, round(100 * self.in_window / max(1, self.limit)))


@dataclass(frozen=True)
class JobRow:
    """A recent job, as listed."""

    id: str
    account: str
    status: str
    priority: str
    method: str
    path: str
    metadata: str
    submitted_at: str
    finished_at: str

    @property
    def waiting(self) -> bool:
        """Whether it can still be cancelled or moved."""
        return self.status in WAITING_STATES


@dataclass(frozen=True)
class BatchRow:
    """A recent batch and how far along it is."""

    status: BatchStatus
    accounts: list[str]

    @property
    def done(self) -> int:
        """Its jobs in a final state."""
        counts = self.status.counts
        return counts.succeeded + counts.failed + counts.cancelled

    @property
    def percent(self) -> int:
        """Its progress, in percent."""
        return round(100 * self.done / max(1, self.status.total))


@dataclass(frozen=True)
class Dashboard:
    """Everything ``/ui`` shows for one viewer."""

    accounts: list[AccountView]
    batches: list[BatchRow]
    jobs: dict[str, list[JobRow]]
    letters: list[dict[str, object]]
    letters_total: int
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


def _minute_counts(hours: list[dict[bytes, bytes]], now_s: int) -> list[int]:
    merged = {int(k): int(v) for hour in hours for k, v in hour.items()}
    current = now_s // 60
    return [merged.get(minute, 0) for minute in range(current - MINUTES + 1, current + 1)]


def account_view(bridge: BridgeClient, keys: Keys, name: str, *, fold: bool = True) -> AccountView:
    """The account's quota, pause, lanes with their forecast, and its last hour of calls (``fold``: the
    counts scripts left pending folded first, in the same step; else the caller folded them)."""
    settings = bridge.settings
    rate = settings.accounts[name].rate_limit
    backlog = bridge.backlog(name)
    limiter = bridge.quota_state(name)
    now_s = backlog.now_ms // 1000
    with bridge.redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.delayed(name))
        hours = [keys.calls_per_minute(name, hour) for hour in (now_s // 3600 - 1, now_s // 3600)]
        if fold:
            fold_then_read(pipe, keys, hours)  # the calls scripts left pending, counted first
        else:
            for hour in hours:
                pipe.hgetall(hour)
        delayed, *read = pipe.execute()
    folded = hashes_read(read[0]) if fold else read
    lanes = [Lane(p, backlog.waiting[p], backlog.last_start(p)) for p in PRIORITIES]
    return AccountView(
        name=name,
        rate=str(rate),
        limit=limiter.limit,
        in_window=limiter.in_window,
        paused_s=limiter.paused_s,
        interval_s=limiter.interval_s,
        learned=limiter.learned_text,
        lanes=lanes,
        delayed=int(delayed),
        chart=layout(_minute_counts(folded, now_s), rate.limit * 60 / rate.window_s),
    )


def _job_row(job_id: str, account: str, values: list[bytes | None], calls: dict[str, str]) -> JobRow | None:
    status, priority, op, submitted, finished, leader = (text(v) if v is not None else "" for v in values)
    if not op:
        return None  # expired since it entered the index
    status = shown_status(status or "queued", calls.get(leader))  # as ``get`` says
    operation = json.loads(op)
    metadata = operation.get("metadata") or {}
    return JobRow(
        id=job_id,
        account=account,
        status=status or "queued",
        priority=priority,
        method=str(operation.get("method", "")),
        path=str(operation.get("path", "")),
        metadata=json.dumps(metadata, ensure_ascii=False) if metadata else "",
        submitted_at=submitted[:19].replace("T", " "),
        finished_at=finished[:19].replace("T", " "),
    )


def recent_jobs(client: redis.Redis, keys: Keys, accounts: list[str], *, limit: int = JOBS) -> dict[str, list[JobRow]]:
    """The latest ``limit`` jobs of each account from its index, grouped by state (states in ``JOB_STATES`` order)."""
    with client.pipeline(transaction=False) as pipe:
        for account in accounts:
            pipe.zrevrange(keys.recent_jobs(account), 0, limit - 1)
        ids = [[text(i) for i in found] for found in pipe.execute()]
    listed = [(account, job_id) for account, found in zip(accounts, ids, strict=True) for job_id in found]
    with client.pipeline(transaction=False) as pipe:
        for _, job_id in listed:
            pipe.hmget(keys.job(job_id), list(_JOB_FIELDS))
        fetched = pipe.execute()
    # A waiting job that joined a shared call (spec §13) is running while that call is.
    joined = [values for values in fetched if values[-1] is not None and text(values[0] or b"queued") in WAITING_STATES]
    leaders = sorted({text(values[-1]) for values in joined})
    with client.pipeline(transaction=False) as pipe:
        for leader in leaders:
            pipe.hget(keys.job(leader), JobField.status)
        calls = {leader: text(status) for leader, status in zip(leaders, pipe.execute(), strict=True) if status}
    rows = [_job_row(job_id, account, values, calls) for (account, job_id), values in zip(listed, fetched, strict=True)]
    grouped: dict[str, list[JobRow]] = {state: [] for state in JOB_STATES}
    for row in rows:
        if row is not None:
            grouped.setdefault(row.status, []).append(row)
    return {state: found for state, found in grouped.items() if found}


def recent_batches(bridge: BridgeClient, keys: Keys, viewer: Viewer, accounts: list[str]) -> list[BatchRow]:
    """The latest batches of the accounts (newest first), each only if the viewer may use all its accounts."""
    with bridge.redis.pipeline(transaction=False) as pipe:
        for account in accounts:
            pipe.zrevrange(keys.recent_batches(account), 0, BATCHES - 1, withscores=True)
        scored = {text(member): score for found in pipe.execute() for member, score in found}
    rows = []
    for batch_id in sorted(scored, key=lambda b: scored[b], reverse=True)[:BATCHES]:
        try:
            owners = bridge.batch_accounts(batch_id)
            if viewer.sees(owners):
                rows.append(BatchRow(bridge.get_batch(batch_id), owners))
        except BatchNotFound:
            continue  # expired since it entered the index
    return rows


def dead_letters(client: redis.Redis, keys: Keys, viewer: Viewer) -> tuple[list[dict[str, object]], int]:
    """Up to ``LETTERS`` dead letters of the viewer's accounts (newest first), and how many there are in all."""
    total = int(client.hlen(keys.dead_letters))
    _, sample = client.hscan(keys.dead_letters, 0, count=LETTERS * 4)
    letters = [json.loads(value) for value in (sample.values() if isinstance(sample, dict) else [])]
    with client.pipeline(transaction=False) as pipe:
        for letter in letters:
            subject = str(letter.get("subject", ""))
            if subject.startswith(BATCH):
                pipe.hget(keys.batch(subject.removeprefix(BATCH)), "accounts")
            else:
                pipe.hget(keys.job(subject), JobField.account)
        owners = [text(found).split(",") if found else [] for found in pipe.execute()]
    visible = []
    for letter, accounts in zip(letters, owners, strict=True):
        if viewer.caller.accounts is None or viewer.sees(accounts):  # an expired subject: every-account keys only
            visible.append({**letter, "accounts": ",".join(accounts) or "?"})
    visible.sort(key=lambda letter: str(letter.get("failed_at", "")), reverse=True)
    return visible[:LETTERS], total


def gather(bridge: BridgeClient, keys: Keys, viewer: Viewer) -> Dashboard:
    """The whole dashboard for ``viewer``: only the accounts its key may use."""
    accounts = [name for name in bridge.settings.accounts.names if viewer.caller.may_use(name)]
    letters, total = dead_letters(bridge.redis, keys, viewer)
    scripts.register(bridge.redis, "counts_fold")(keys=[keys.stats_pending])  # once for every chart below
    return Dashboard(
        accounts=[account_view(bridge, keys, name, fold=False) for name in accounts],
        batches=recent_batches(bridge, keys, viewer, accounts),
        jobs=recent_jobs(bridge.redis, keys, accounts),
        letters=letters,
        letters_total=total if viewer.caller.accounts is None else len(letters),
    )


def schedule_views(runner: ScheduleRunner, bridge: BridgeClient, viewer: Viewer) -> list[ScheduleView]:
    """The schedules of the viewer's accounts (spec §15), by name, each with its next ticks and forecast."""
    return [
        show(runner.store, bridge.settings, name, defined)
        for name, defined in runner.store.all().items()
        if viewer.caller.may_use(defined.schedule.account)
    ]
