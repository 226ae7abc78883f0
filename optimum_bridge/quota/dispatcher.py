"""The quota scheduler: a free slot goes to the best waiting job, at the moment its call may start.

Jobs wait in priority lanes in Redis (``urgent``, ``normal``, ``bulk``; one
sorted set each per account, scored by submission order). ``Dispatcher.run``
calls ``lua/dispatch.lua``, which in one atomic step gives every slot that is
free *now* to the oldest job of the highest lane present, records the start
in the account's quota log, and pushes the job's Celery message; a worker
then calls at once. Nothing is reserved ahead and no thread sleeps holding a
slot, so an urgent job submitted into any backlog meets the next slot.

Every worker's upkeep loop runs the dispatcher (any one of them is enough, and
the script makes them safe together); it returns when the next slot is due,
so the loop wakes right on time. Slots are given only while the live workers
have a free thread (``capacity``), so a dispatched job never queues behind
others in Celery. ``jobs.recovery`` puts back in their lane the jobs whose
message or whose worker was lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from optimum_bridge.keys import EXECUTE_TASK, OPERATIONS_QUEUE, Keys
from optimum_bridge.lua import scripts
from optimum_bridge.process.kombu import message_template
from optimum_bridge.quota.limiter import RateLimiter

log = logging.getLogger(__name__)

#: How long the dispatcher sleeps when nothing waits (new jobs are noticed within this).
IDLE_POLL_S = 0.05
#: How long it sleeps when jobs wait but every worker thread is busy: a finished job frees one,
#: and no event tells the dispatcher, so it looks again soon (50 ms capped a pool at ~8 jobs/0.1 s).
BUSY_POLL_S = 0.005
#: Most slots given in one call of the script (a burst after idle is given in a few calls).
BATCH = 50


@dataclass(frozen=True)
class Dispatched:
    """What one dispatcher call did, and when to call again (seconds from now)."""

    outcome: str
    given: int
    next_in_s: float


class Dispatcher:
    """Gives one account's free slots to its best waiting jobs."""

    def __init__(self, client: redis.Redis, keys: Keys, limiter: RateLimiter, *, handoff_s: float) -> None:
        self._keys = keys
        self._limiter = limiter
        self._handoff_ms = int(handoff_s * 1000)
        self._template, self._embed = message_template(EXECUTE_TASK, queue=OPERATIONS_QUEUE)
        self._dispatch = scripts.register(client, "dispatch")
        account = limiter.account
        self._script_keys = [
            *keys.lanes(account),
            keys.delayed(account),
            limiter.log_key,
            limiter.pause_key,
            limiter.tat_key,
            keys.dispatched,
            keys.running,
            keys.capacity,
            keys.queue(OPERATIONS_QUEUE),
            limiter.learned_key,
        ]

    def run(self) -> Dispatched:
        """Give every slot free now; returns what happened and when the next slot is due."""
        quota = self._limiter.quota
        args: list[str | int] = [
            self._keys.job_prefix,
            *quota.args(),
            self._handoff_ms,
            self._template,
            self._embed,
            BATCH,
            self._keys.lane_prefix,
            self._limiter.account,
        ]
        outcome, given, wait_ms = self._dispatch(keys=self._script_keys, args=args)
        kind = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if kind == "more":
            next_in = 0.0
        elif kind == "wait":
            next_in = int(wait_ms) / 1000
        elif kind == "busy":
            next_in = BUSY_POLL_S
        else:  # idle: a new job is noticed at the next poll
            next_in = IDLE_POLL_S
        return Dispatched(kind, int(given), next_in)
