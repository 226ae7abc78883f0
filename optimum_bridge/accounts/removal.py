"""A removed account's waiting jobs end ``cancelled``, ``error.kind = "account_removed"`` (spec §12a).

It goes through the cancel of spec §11a (``lua/cancel.lua``): each job leaves
its lane, delayed set or hand-off, makes no call, and its callback
(``operation.cancelled``) and its batch's are sent as for any cancel. A job
whose call is under way is left to finish. The store's removal runs it once;
the workers' upkeep runs it again for a day over the removed accounts
(``keys.accounts_removed``), for a retry parked by a call that was under way or
a submission that raced the removal.
"""

from __future__ import annotations

import time

import redis

from optimum_bridge.accounts.store import members
from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.jobs.steps import JobSteps
from optimum_bridge.keys import PRIORITIES, JobField, Keys, text
from optimum_bridge.schemas import ErrorInfo
from optimum_bridge.steps import SyncDriver

REMOVED = ErrorInfo(kind="account_removed", message="the account was removed before the call was made")
#: Jobs cancelled per step, and the most steps of one sweep (a call handed on brings another job up).
PER_STEP = 500
MAX_STEPS = 200
#: How long after its removal an account's lanes are still swept by the workers.
SWEEP_FOR_S = 86400


class Removal:
    """Cancels the waiting jobs of removed accounts."""

    def __init__(self, client: redis.Redis, keys: Keys, *, result_ttl_s: int, clock: Clock = SYSTEM_CLOCK) -> None:
        self._redis = client
        self._keys = keys
        self._run = SyncDriver(client)
        self._steps = JobSteps(keys, result_ttl_s, result_ttl_s, clock)

    def waiting(self, account: str) -> list[str]:
        """Up to ``PER_STEP`` jobs of ``account`` that wait: in a lane, parked, or handed to a worker."""
        keys = self._keys
        with self._redis.pipeline(transaction=False) as pipe:
            for priority in PRIORITIES:
                pipe.zrange(keys.lane(priority, account), 0, PER_STEP - 1)
            pipe.zrange(keys.delayed(account), 0, PER_STEP - 1)
            pipe.zrange(keys.dispatched, 0, -1)
            *queued, handed = pipe.execute()
        ids = [text(raw) for reply in queued for raw in reply]
        if handed:
            with self._redis.pipeline(transaction=False) as pipe:
                for raw in handed:
                    pipe.hget(keys.job(text(raw)), JobField.account)
                owners = pipe.execute()
            ids += [text(raw) for raw, owner in zip(handed, owners, strict=True) if owner and text(owner) == account]
        return list(dict.fromkeys(ids))[:PER_STEP]

    def cancel_waiting(self, account: str) -> int:
        """Cancel every waiting job of ``account``; how many were cancelled."""
        total = 0
        for _ in range(MAX_STEPS):
            ids = self.waiting(account)
            if not ids:
                break
            outcomes = self._run(self._steps.cancel(ids, error=REMOVED))
            cancelled = sum(1 for outcome in outcomes if outcome == "cancelled")
            total += cancelled
            if cancelled == 0:  # only calls under way are left: they finish
                break
        return total

    def sweep(self) -> int:
        """Cancel what still waits on an account removed in the last day (workers' upkeep); how many.

        One command when no account was removed in the last day."""
        since_ms = (time.time() - SWEEP_FOR_S) * 1000
        removed = members(self._redis.zrangebyscore(self._keys.accounts_removed, f"({since_ms}", "+inf"))
        if removed:
            self._redis.zremrangebyscore(self._keys.accounts_removed, "-inf", since_ms)
        return sum(self.cancel_waiting(name) for name in removed)
