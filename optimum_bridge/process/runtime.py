"""Wiring: builds the Redis client, HTTP clients and stores from the settings.

One ``Runtime`` per process (rebuilt after a fork), shared by the tasks.
Nothing here decides anything; it only connects the plain classes.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import httpx
import redis

from optimum_bridge.accounts.cipher import SecretsCipher
from optimum_bridge.accounts.registry import AccountRegistry
from optimum_bridge.accounts.removal import Removal
from optimum_bridge.accounts.store import AccountStore
from optimum_bridge.callbacks.background import BackgroundDelivery
from optimum_bridge.callbacks.deliveries import DeliveryStore
from optimum_bridge.callbacks.sender import DEFAULT_SCHEDULE, CallbackSender
from optimum_bridge.config.accounts import Account
from optimum_bridge.jobs.batches import BatchStore
from optimum_bridge.jobs.due import DueSet
from optimum_bridge.jobs.executor import Executor, Policy
from optimum_bridge.jobs.leases import LeaseKeeper
from optimum_bridge.jobs.recovery import Recovery
from optimum_bridge.jobs.retry import Backoff
from optimum_bridge.jobs.store import JobStore
from optimum_bridge.keys import DEFAULT_ACCOUNT, Keys
from optimum_bridge.process import egress
from optimum_bridge.process.flag import SharedFlag
from optimum_bridge.process.lazy import lazy
from optimum_bridge.process.live_accounts import AccountRuntime, LiveAccounts, LiveApis
from optimum_bridge.process.metrics import Metrics
from optimum_bridge.process.redis import redis_client
from optimum_bridge.process.replicas import Replicas
from optimum_bridge.quota.dispatcher import Dispatcher
from optimum_bridge.quota.forecast import Forecaster
from optimum_bridge.quota.limiter import RateLimiter
from optimum_bridge.quota.rate import Quota
from optimum_bridge.settings import Settings
from optimum_bridge.upstream.tokens import TokenStore

#: Threads of a process making first callback deliveries, and how many may wait for them.
FIRST_DELIVERY_THREADS = 4
FIRST_DELIVERY_BACKLOG = 64


@dataclass
class Runtime:
    """Everything a worker process needs, built lazily from ``settings``."""

    settings: Settings
    pid: int = field(default_factory=os.getpid)
    #: Guards the lazy parts of this runtime and of its accounts (one lock: no ordering between two).
    build_lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    #: Set when the worker begins a warm shutdown: threads stop taking jobs after their own, also
    #: those of a prefork pool's children (shared memory; kept by the runtime rebuilt after a fork).
    draining: SharedFlag = field(default_factory=SharedFlag, repr=False, compare=False)

    @lazy
    def redis(self) -> redis.Redis:
        return redis_client(self.settings)

    @lazy
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    @lazy
    def metrics(self) -> Metrics:
        metrics = Metrics(self.redis, self.keys)
        metrics.upgrade()  # before this process counts a call (process.metrics says why)
        return metrics

    @lazy
    def jobs(self) -> JobStore:
        return JobStore(
            self.redis,
            self.keys,
            result_ttl_s=self.settings.result_ttl_s,
            pending_ttl_s=self.settings.pending_ttl_s,
            callback_watch_s=self.settings.redelivery_timeout_s,
            replicas=Replicas.of(self.settings),
        )

    @lazy
    def account_store(self) -> AccountStore:
        """The accounts created at runtime, in Redis (spec §12a)."""
        cipher = SecretsCipher(self.settings.secrets_key)
        return AccountStore(
            self.redis, self.keys, file=self.settings.accounts, cipher=cipher, sandbox_url=self.settings.sandbox_url
        )

    @lazy
    def registry(self) -> AccountRegistry:
        """Every account, the file's and those created at runtime, refreshed within a second of a change."""
        return AccountRegistry(self.account_store)

    @lazy
    def removal(self) -> Removal:
        # A job of a removed account may come back until its call under way ends and parks it (the
        # redelivery timeout bounds a lost worker) and its retry is due (at most ``retry_cap_s``).
        quiet_s = self.settings.redelivery_timeout_s + self.settings.retry_cap_s
        return Removal(self.redis, self.keys, result_ttl_s=self.settings.result_ttl_s, quiet_s=quiet_s)

    @lazy
    def accounts(self) -> LiveAccounts:
        """Each account's token, quota and API client, by name (built when first needed)."""
        return LiveAccounts(self)

    def quota_of(self, account: Account) -> Quota:
        """An account's quota, with the margin and burst of the settings."""
        return Quota.of(account.rate_limit, margin_s=self.settings.rate_limit_margin_s, burst=self.settings.rate_burst)

    def quotas(self) -> dict[str, Quota]:
        """Every account's quota, by name (runtime accounts as last seen)."""
        return {name: self.quota_of(account) for name, account in self.registry.all().items()}

    def _account(self, account: Account) -> AccountRuntime:
        limiter = RateLimiter(
            self.redis,
            self.keys,
            account.rate_limit,
            margin_s=self.settings.rate_limit_margin_s,
            burst=self.settings.rate_burst,
            account=account.name,
            learn=self.settings.learn_quota,
        )
        return AccountRuntime(self, account, limiter)

    @property
    def limiter(self) -> RateLimiter:
        """The ``default`` account's quota."""
        return self.accounts[DEFAULT_ACCOUNT].limiter

    @lazy
    def dispatcher(self) -> Dispatcher:
        """Gives the due accounts' free slots to their best jobs (one for every account)."""
        return Dispatcher(self.redis, self.keys, self.quotas(), handoff_s=self.settings.handoff_s)

    @lazy
    def recovery(self) -> Recovery:
        return Recovery(self.redis, self.keys)

    @lazy
    def forecaster(self) -> Forecaster:
        return Forecaster(self.redis, self.keys, self.quotas())

    @lazy
    def batches(self) -> BatchStore:
        return BatchStore(
            self.redis,
            self.keys,
            self.jobs,
            self.forecaster,
            result_ttl_s=self.settings.result_ttl_s,
            pending_ttl_s=self.settings.pending_ttl_s,
            replicas=Replicas.of(self.settings),
        )

    @lazy
    def api_http(self) -> httpx.Client:
        return egress.api_http(self.settings)

    @property
    def tokens(self) -> TokenStore:
        """The ``default`` account's token."""
        return self.accounts[DEFAULT_ACCOUNT].tokens

    @property
    def max_wait_s(self) -> float:
        """Longest a running job waits for a second slot (its re-send after a 401) before parking."""
        return min(60.0, self.settings.redelivery_timeout_s / 4)

    @lazy
    def executor(self) -> Executor:
        apis = LiveApis(self.accounts)
        policy = Policy(
            max_attempts=self.settings.max_attempts,
            budget_s=self.settings.max_retry_duration_s,
            backoff=Backoff(base_s=self.settings.retry_base_s, cap_s=self.settings.retry_cap_s),
        )
        # Callbacks are first delivered by the worker that finished the job, off its thread (none
        # without a secret: queued).
        callbacks = None
        if self.settings.callback_secret is not None:
            callbacks = BackgroundDelivery(
                self.callbacks, threads=FIRST_DELIVERY_THREADS, backlog=FIRST_DELIVERY_BACKLOG
            )
        # A thread goes on to the next job whose slot is free now, for a while (a task's message is
        # redelivered to no effect past the visibility timeout, so well within it). Not with
        # BRIDGE_REDIS_MIN_REPLICAS: there every job goes through the dispatcher and its claim, the
        # path tests/faults/test_failover.py proved (one run of it saw a call made twice with taking
        # on, while the replicas refused writes; its cause is not found).
        chain_s = 0.0 if self.settings.redis_min_replicas else min(30.0, self.settings.redelivery_timeout_s / 4)
        return Executor(
            self.jobs, apis, policy, self.leases, callbacks=callbacks, chain_s=chain_s, draining=self.draining
        )

    @lazy
    def leases(self) -> LeaseKeeper:
        # Short enough that a dead worker's job is free well within the redelivery timeout.
        ttl_s = min(30.0, max(2.0, self.settings.redelivery_timeout_s / 2))
        return LeaseKeeper(self.redis, self.keys, ttl_ms=int(ttl_s * 1000))

    @lazy
    def due(self) -> DueSet:
        return DueSet(self.redis, self.keys)

    @lazy
    def deliveries(self) -> DeliveryStore:
        return DeliveryStore(
            self.redis, self.keys, watch_s=self.settings.redelivery_timeout_s, replicas=Replicas.of(self.settings)
        )

    @lazy
    def callback_http(self) -> httpx.Client:
        return egress.callback_http(self.settings)

    @lazy
    def callbacks(self) -> CallbackSender:
        return CallbackSender(
            self.deliveries,
            self.callback_http,
            key=self.settings.require_callback_secret(),
            allow_private=self.settings.callback_allow_private,
            schedule=self.settings.callback_schedule or DEFAULT_SCHEDULE,
            lease_ms=int(self.settings.callback_timeout_s * 3000),
            proxied=self.settings.callback_proxy_url is not None,
        )

    def close(self) -> None:
        """Close the connections this runtime opened (only those it did open)."""
        for name in ("api_http", "callback_http", "redis"):
            if name in self.__dict__:
                self.__dict__[name].close()


_lock = threading.Lock()
_current: Runtime | None = None


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the lock as the process forked; that thread is gone.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def install(settings: Settings) -> Runtime:
    """Make ``settings`` this process's runtime (replacing any earlier one)."""
    global _current
    with _lock:
        _current = Runtime(settings)
        return _current


def current() -> Runtime:
    """This process's runtime; rebuilt after a fork so no connection is shared."""
    global _current
    with _lock:
        if _current is None:
            raise RuntimeError("runtime not installed: call runtime.install(settings) first")
        if _current.pid != os.getpid():
            _current = Runtime(_current.settings, draining=_current.draining)
        return _current
