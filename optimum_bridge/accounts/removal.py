"""A removed account's waiting jobs end ``cancelled``, ``error.kind = "account_removed"`` (spec §12a).

It goes through the cancel of spec §11a (``lua/cancel.lua``): each job leaves
its lane, delayed set or hand-off, makes no call, and its callback
(``operation.cancelled``) and its batch's are sent as for any cancel. A job
whose call is under way is left to finish. The store's removal runs it once;
the workers' upkeep runs it again for a day over the removed accounts
(``keys.accounts_removed``), for a retry parked by a call that was under way or
a submission that raced the removal. Each round is one script (``lua/removed_sweep.lua``,
on the Redis clock) claimed by one worker of the pool, so an idle worker pays one
command per round whatever the number of removals; a name leaves the set after a
round that finds nothing of it once ``quiet_s`` (the longest a job of it may still
come back) has passed since its removal.
"""

from __future__ import annotations

from collections.abc import Callable

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.jobs.steps import JobSteps
from optimum_bridge.keys import PRIORITIES, JobField, Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.schemas import ErrorInfo
from optimum_bridge.steps import SyncDriver

REMOVED = ErrorInfo(kind="account_removed", message="the account was removed before the call was made")
#: Jobs cancelled per step, and the most steps of one sweep (a call handed on brings another job up).
PER_STEP = 500
MAX_STEPS = 200
#: How long after its removal an account's lanes are still swept by the workers.
SWEEP_FOR_S = 86400
#: How long one worker holds a round of the sweep: under the upkeep's 5 s, so each round is done once.
ROUND_S = 4.0


class Removal:
    """Cancels the waiting jobs of removed accounts."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        result_ttl_s: int,
        quiet_s: float = SWEEP_FOR_S,
        round_s: float = ROUND_S,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._run = SyncDriver(client)
        self._steps = JobSteps(keys, result_ttl_s, result_ttl_s, clock)
        self._quiet_ms = int(quiet_s * 1000)
        self._round_ms = max(1, int(round_s * 1000))
        self._sweep = scripts.register(client, "removed_sweep")

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
        return self._cancel_each(lambda step: self.waiting(account))

    def sweep(self) -> int:
        """Cancel what still waits on an account removed in the last day (workers' upkeep); how many.

        One command for this worker when no account is left to sweep or another worker has this round."""
        return self._cancel_each(lambda step: self.round(claim=step == 0))

    def _cancel_each(self, found: Callable[[int], list[str]]) -> int:
        """Cancel, step after step, the jobs ``found(step)`` lists, until it lists none; how many."""
        total = 0
        for step in range(MAX_STEPS):
            ids = found(step)
            if not ids:
                break
            outcomes = self._run(self._steps.cancel(ids, error=REMOVED))
            cancelled = sum(1 for outcome in outcomes if outcome == "cancelled")
            total += cancelled
            if cancelled == 0:  # only calls under way are left: they finish
                break
        return total

    def round(self, *, claim: bool = True) -> list[str]:
        """One step of a sweep: up to ``PER_STEP`` waiting jobs of removed accounts (``claim``: take the round)."""
        k = self._keys
        args = [
            k.job_prefix,
            k.lane_prefix,
            k.delayed(""),
            "1" if claim else "0",
            self._round_ms,
            SWEEP_FOR_S * 1000,
            self._quiet_ms,
            PER_STEP,
            k.limiter_prefix,
        ]
        keys = [k.accounts_removed, k.accounts_removed_claim, k.dispatched, k.leases, k.running]
        return [text(raw) for raw in self._sweep(keys=keys, args=args)]
