"""Every Redis key the bridge writes, built in one place from one prefix.

Two bridges can share a Redis by using different ``BRIDGE_KEY_PREFIX`` values,
and an operator can find everything we store with ``SCAN MATCH <prefix>*``.
Celery's own keys (queues, unacked messages, bindings) carry the same prefix
through kombu's ``global_keyprefix``.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

OPERATIONS_QUEUE = "bridge.operations"
CALLBACKS_QUEUE = "bridge.callbacks"
EXECUTE_TASK = "bridge.execute"
DELIVER_TASK = "bridge.deliver_callback"
DELIVER_BATCH_TASK = "bridge.deliver_batch_callback"

#: The lanes, highest first: a free slot goes to the oldest job of the highest lane present.
PRIORITIES: tuple[str, ...] = ("urgent", "normal", "bulk")
DEFAULT_ACCOUNT = "default"
#: How many of an account's latest jobs and batches its indexes keep (``/ui`` reads them, never every job).
RECENT_JOBS = 200
#: submit.lua trims an account's recent jobs when a seq is a multiple of this, not at every job.
RECENT_JOBS_TRIM_PERIOD = 50
RECENT_BATCHES = 50
#: How long a per-minute call count is kept (``/ui`` charts the last hour).
CALLS_PER_MINUTE_TTL_S = 2 * 3600


class JobField(StrEnum):
    """The fields of a job hash (``Keys.job``): declared here once, given to the Lua scripts as ``FIELD``."""

    op = "op"  # the Operation, as JSON
    status = "status"  # queued, running, retrying, succeeded, failed
    attempts = "attempts"  # calls sent so far
    inflight = "inflight"  # "1" while a request may be on its way (a crash leaves it set)
    submitted_at = "submitted_at"
    finished_at = "finished_at"
    response = "response"  # the last ApiResponse, as JSON
    error = "error"  # the last ErrorInfo, as JSON
    cb = "cb"  # callback delivery: pending, delivered or dead
    cb_attempt = "cb_attempt"  # the next callback delivery attempt
    priority = "priority"  # its lane: urgent, normal or bulk
    account = "account"  # the Optimum account whose token and quota it uses
    seq = "seq"  # its place in its account's lanes (the order of submission)
    batch = "batch"  # the key of its batch's hash, if it belongs to one
    dispatch = "dispatch"  # how many times it was given a slot; a message carries this number
    dispatched_at = "dispatched_at"  # when (ms, Redis clock) it was last given a slot
    started_at = "started_at"  # when its last attempt's call was sent
    read = "read"  # a GET leading a shared call: the key naming it as the call identical GETs join
    alone = "alone"  # "1": a GET that shares no call (coalesce off), so it never has followers
    coalesced_with = "coalesced_with"  # a GET served by another job's call (or cached answer): that job
    own_priority = "own_priority"  # a call lifted to its followers' priority: the one it was submitted with
    owner = "owner"  # who holds its lease in ``Keys.leases`` (written as it starts running; cleared by recovery)


class Keys:
    """Key names under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def job_prefix(self) -> str:
        """Prefix of the job records: ``<job_prefix><job id>`` (the scripts build job keys from it)."""
        return f"{self.prefix}job:"

    def job(self, job_id: str) -> str:
        """Hash: the job record (operation, state, result)."""
        return f"{self.job_prefix}{job_id}"

    def lease(self, name: str) -> str:
        """String: who holds lease ``name`` (a callback delivery's ``cb:<subject>``; the previous version's jobs')."""
        return f"{self.lease_prefix}{name}"

    def idempotency(self, key: str) -> str:
        """String: job id for an idempotency key (hashed: keys are free text)."""
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.prefix}idem:{digest}"

    def token(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Hash: an account's shared access token, its fingerprint and expiry."""
        return f"{self.prefix}token:{account}"

    def token_lock(self, account: str = DEFAULT_ACCOUNT) -> str:
        """String: owner of an account's token refresh lock."""
        return f"{self.prefix}token:{account}:lock"

    def openapi(self, account: str = DEFAULT_ACCOUNT) -> str:
        """String: the account's OpenAPI document, as JSON (fetched by the workers' upkeep)."""
        return f"{self.prefix}openapi:{account}"

    def openapi_version(self, account: str = DEFAULT_ACCOUNT) -> str:
        """String: a counter bumped at each store of the document (producers' caches check it)."""
        return f"{self.prefix}openapi:{account}:version"

    @property
    def openapi_due(self) -> str:
        """Sorted set: account -> when (epoch s) its OpenAPI document is due (asked by producers, then daily)."""
        return f"{self.prefix}openapi:due"

    def openapi_claim(self, account: str = DEFAULT_ACCOUNT) -> str:
        """String: set (with a TTL) while the account's last fetch of the document is fresh; one worker fetches."""
        return f"{self.prefix}openapi:{account}:claim"

    def limiter_log(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Sorted set: start times (ms, Redis clock) of an account's recent calls (no TTL; see ``lua/_limiter.lua``)."""
        return f"{self.limiter_prefix}{account}:log"

    def limiter_state(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Hash: quota, pause, pacer, learned limits, delayed hint: one ``HMGET`` per slot (``lua/_limiter.lua``)."""
        return f"{self.limiter_prefix}{account}:state"

    def limiter_pause(self, account: str = DEFAULT_ACCOUNT) -> str:
        """String: the pause (ms) as the previous version reads it (kept written: ``lua/limiter_pause.lua``)."""
        return f"{self.limiter_prefix}{account}:pause"

    def limiter_learned(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Hash: the learned limits as the previous version reads them (kept written, with a TTL)."""
        return f"{self.limiter_prefix}{account}:learned"

    def limiter_tat(self, account: str = DEFAULT_ACCOUNT) -> str:
        """String: the previous version's pacer TAT (no longer written; deleted with the account)."""
        return f"{self.limiter_prefix}{account}:tat"

    @property
    def lane_prefix(self) -> str:
        """Prefix of the lanes: ``<lane_prefix><account>:<priority>``."""
        return f"{self.prefix}lane:"

    def lane(self, priority: str, account: str = DEFAULT_ACCOUNT) -> str:
        """Sorted set: an account's jobs waiting for a slot at ``priority``, scored by ``seq``."""
        return f"{self.lane_prefix}{account}:{priority}"

    def lanes(self, account: str = DEFAULT_ACCOUNT) -> list[str]:
        """The account's lanes, highest first."""
        return [self.lane(priority, account) for priority in PRIORITIES]

    @property
    def seq_prefix(self) -> str:
        """Prefix of the per-account submission counters."""
        return f"{self.prefix}seq:"

    def delayed(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Sorted set: an account's jobs waiting for their retry time (ms, Redis clock)."""
        return f"{self.prefix}delayed:{account}"

    @property
    def ready(self) -> str:
        """Sorted set: the accounts with waiting work -> when (ms, Redis clock) each is next due (``_prelude.lua``)."""
        return f"{self.prefix}ready"

    @property
    def wake(self) -> str:
        """List: wake-up tokens for the dispatchers, pushed when work becomes due now (a worker ``BLPOP``s it)."""
        return f"{self.prefix}wake"

    @property
    def quotas(self) -> str:
        """Hash: account -> its quota (``limit window interval burst``), copied to ``limiter_state``'s ``quota``."""
        return f"{self.prefix}quotas"

    @property
    def limiter_prefix(self) -> str:
        """Prefix of the limiter keys: ``<limiter_prefix><account>:log`` (``:state``, and the previous version's)."""
        return f"{self.prefix}limiter:"

    @property
    def dispatched(self) -> str:
        """Sorted set: jobs given a slot, not yet taken by a worker -> hand-off deadline (ms)."""
        return f"{self.prefix}dispatched"

    @property
    def leases(self) -> str:
        """Sorted set: the jobs workers run -> lease deadline (ms, Redis clock); the owner is the job's ``owner``."""
        return f"{self.prefix}leases"

    @property
    def running(self) -> str:
        """Sorted set, the previous version's (read by recovery, never written): jobs run -> since when (ms)."""
        return f"{self.prefix}running"

    @property
    def worker_threads(self) -> str:
        """Hash: worker name -> threads it gives to operations (0 for a callbacks-only worker)."""
        return f"{self.prefix}workers:threads"

    @property
    def capacity(self) -> str:
        """String: threads of the live workers that run operations (expires with them)."""
        return f"{self.prefix}capacity"

    @property
    def lease_prefix(self) -> str:
        """Prefix of the lease strings (``lease``)."""
        return f"{self.prefix}lease:"

    def read(self, account: str, digest: str) -> str:
        """String: the job whose GET call identical GETs of ``account`` join while it waits or runs."""
        return f"{self.prefix}read:{account}:{digest}"

    def fresh(self, account: str, digest: str) -> str:
        """String: ``<job id>:<ms>``, the last such GET that succeeded (``max_age_s``); the scripts build it too."""
        return f"{self.read(account, digest)}:fresh"

    @property
    def followers_prefix(self) -> str:
        """Prefix of the sets of jobs waiting on a leader's call: ``<followers_prefix><job id>``."""
        return f"{self.prefix}followers:"

    def followers(self, job_id: str) -> str:
        """Set: the jobs that joined ``job_id``'s call and get its answer."""
        return f"{self.followers_prefix}{job_id}"

    def batch(self, batch_id: str) -> str:
        """Hash: a batch (total, counts by state, metadata, callback, forecast inputs)."""
        return f"{self.prefix}batch:{batch_id}"

    def batch_id(self, batch_key: str) -> str:
        """The batch id in a batch's key (a job's ``batch`` field holds the key)."""
        return batch_key.removeprefix(f"{self.prefix}batch:")

    def batch_jobs(self, batch_id: str) -> str:
        """List: a batch's job ids, in submission order."""
        return f"{self.prefix}batch:{batch_id}:jobs"

    @property
    def recent_prefix(self) -> str:
        """Prefix of the indexes of recent work: ``<recent_prefix><account>:jobs`` and ``:batches``."""
        return f"{self.prefix}recent:"

    def recent_jobs(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Sorted set: an account's latest ``RECENT_JOBS`` job ids at least, by ``seq`` (trimmed by submit.lua)."""
        return f"{self.recent_prefix}{account}:jobs"

    def recent_batches(self, account: str = DEFAULT_ACCOUNT) -> str:
        """Sorted set: an account's latest ``RECENT_BATCHES`` batch ids, scored by submission time (µs)."""
        return f"{self.recent_prefix}{account}:batches"

    def calls_per_minute(self, account: str, hour: int) -> str:
        """Hash: minute (epoch s // 60) -> the account's API calls in it, one per hour (epoch s // 3600); 2 h TTL."""
        return f"{self.prefix}calls:{account}:{hour}"

    @property
    def due(self) -> str:
        """Sorted set: Celery messages to enqueue at their score (ms, Redis clock)."""
        return f"{self.prefix}due"

    @property
    def callbacks_watch(self) -> str:
        """Sorted set: job id -> when (ms, Redis clock) its pending callback is presumed lost."""
        return f"{self.prefix}cbwatch"

    @property
    def dead_letters(self) -> str:
        """Hash: job id -> undeliverable callback record."""
        return f"{self.prefix}deadletters"

    @property
    def stats(self) -> str:
        """Hash: counters for metrics (calls by status, 429s, token refreshes...)."""
        return f"{self.prefix}stats"

    @property
    def stats_pending(self) -> str:
        """List: an API call's counts, one entry per script, until folded into their hashes (process.metrics)."""
        return f"{self.prefix}stats:pending"

    @property
    def workers(self) -> str:
        """Sorted set: worker name -> last heartbeat (epoch seconds)."""
        return f"{self.prefix}workers"

    @property
    def unacked(self) -> str:
        """Hash (kombu's): delivery tag -> message a worker holds unacknowledged."""
        return f"{self.prefix}unacked"

    @property
    def schedules(self) -> str:
        """Hash: schedule name -> its definition (JSON: the schedule and where it comes from, file or api)."""
        return f"{self.prefix}schedules"

    @property
    def schedules_due(self) -> str:
        """Sorted set: schedule name -> its next tick (ms); what the upkeep timer of every worker reads."""
        return f"{self.prefix}schedules:due"

    @property
    def schedules_seen(self) -> str:
        """String: when (ms, Redis clock) a worker last looked for due ticks."""
        return f"{self.prefix}schedules:seen"

    @property
    def schedules_outage(self) -> str:
        """String: ``<from>:<to>`` (ms), the last span in which no worker looked: its ticks were missed."""
        return f"{self.prefix}schedules:outage"

    @property
    def schedules_sources(self) -> str:
        """Sorted set: ``<name>|<tick ms>`` whose source job a tick waits on -> when to look at it again (ms)."""
        return f"{self.prefix}schedules:sources"

    @property
    def schedules_making(self) -> str:
        """Sorted set: ``<name>|<tick ms>`` claimed by a worker, its batch not yet made -> when claimed (ms)."""
        return f"{self.prefix}schedules:making"

    def schedule(self, name: str) -> str:
        """Hash: a schedule's state (paused, last run's tick, batch, size, error, source job)."""
        return f"{self.prefix}schedule:{name}"

    def schedule_tick(self, name: str, tick_ms: int) -> str:
        """String: one tick of a schedule, claimed once (SET NX): what it made (a batch id, or why none)."""
        return f"{self.prefix}schedule:{name}:tick:{tick_ms}"

    @property
    def accounts(self) -> str:
        """Sorted set (every score 0, so ordered by name): the accounts created at runtime (spec §12a)."""
        return f"{self.prefix}accounts"

    def account(self, name: str) -> str:
        """Hash: an account created at runtime (its secret encrypted with ``BRIDGE_SECRETS_KEY``)."""
        return f"{self.prefix}account:{name}"

    @property
    def accounts_version(self) -> str:
        """String: a counter bumped at every change of a runtime account (workers check it every second)."""
        return f"{self.prefix}accounts:version"

    @property
    def accounts_changes(self) -> str:
        """Sorted set: account name -> the ``accounts_version`` of its last change (created, changed, removed)."""
        return f"{self.prefix}accounts:changes"

    @property
    def accounts_removed(self) -> str:
        """Sorted set: removed account -> when (ms); a day long, their late jobs are cancelled."""
        return f"{self.prefix}accounts:removed"

    @property
    def accounts_removed_claim(self) -> str:
        """String: set (``PX``) by the worker that sweeps the removed accounts this round; the others skip it."""
        return f"{self.prefix}accounts:removed:claim"

    def queue(self, name: str) -> str:
        """The Redis list behind a Celery queue (kombu adds the same prefix)."""
        return f"{self.prefix}{name}"


def text(value: bytes | str) -> str:
    """A Redis reply as ``str`` (clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value
