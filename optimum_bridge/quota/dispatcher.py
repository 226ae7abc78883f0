"""The quota scheduler: a free slot goes to the best waiting job, at the moment its call may start.

Jobs wait in priority lanes in Redis (``urgent``, ``normal``, ``bulk``; one
sorted set each per account, scored by submission order). ``lua/dispatch.lua``
gives, in one atomic step, every slot that is free *now* to the oldest job of
the highest lane present, records the start in the account's quota log, and
pushes the job's Celery message; a worker then calls at once. Nothing is
reserved ahead and no thread sleeps holding a slot, so an urgent job
submitted into any backlog meets the next slot.

**Events, not timers** (spec §10a). The accounts with waiting work are in one
sorted set (``keys.ready``), scored by when each one's next slot may be given.
Whatever gives an account work -- a submission, a retry or deferral parked
until its time, a job put back in its lane -- puts the account there in the
same script, and pushes a token on ``keys.wake`` when that is sooner than
anything a dispatcher waits for; whatever frees a worker thread (a job that
finishes, is parked or put back) wakes one when an account is due. Each
worker runs one ``DispatchLoop``: a thread blocked on the wake list, and a
thread that serves the due accounts (``ZRANGEBYSCORE``: O(log A)), then waits
for a wake-up or for the earliest next slot, whichever comes first. With
nothing waiting it costs a few commands a second, whatever the number of
accounts. Every worker runs one, any one is enough, none is special; a
wake-up lost with a worker is made up by the others within ``SAFETY_WAIT_S``.

Slots are given only while the live workers have a free thread
(``capacity``), so a dispatched job never queues behind others in Celery.
``jobs.recovery`` puts back in their lane the jobs whose message or whose
worker was lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

from optimum_bridge.keys import EXECUTE_TASK, OPERATIONS_QUEUE, Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.process.kombu import message_template
from optimum_bridge.quota.rate import STATE_FIELD, Quota

log = logging.getLogger(__name__)

#: Most slots given to one account in one call of the script (a burst after idle takes a few calls).
BATCH = 50
#: Most due accounts served in one call of the script (more are served by the next, at once).
ACCOUNTS_PER_CALL = 100
#: Longest a dispatcher waits without a wake-up before it looks anyway: a wake-up taken by a worker
#: that died, a capacity that grew without a finished job. The only timer, and not per account.
SAFETY_WAIT_S = 2.0
#: How long one ``BLPOP`` on the wake list blocks (whole seconds: Redis times blocking commands out
#: at its ``hz`` granularity, 100 ms by default, too coarse for slots; so timed waits are in Python).
WAKE_BLOCK_S = 2
#: Accounts per call when the quotas are published and the ready set checked at a worker's start.
SWEEP_CHUNK = 500


@dataclass(frozen=True)
class Dispatched:
    """What one dispatcher call did, and when the earliest account served next is due (None: none waits)."""

    outcome: str
    given: int
    next_in_s: float | None


class Dispatcher:
    """Gives the free slots of the due accounts (or of one account) to their best waiting jobs."""

    def __init__(self, client: redis.Redis, keys: Keys, quotas: Mapping[str, Quota], *, handoff_s: float) -> None:
        self._redis = client
        self._keys = keys
        self.quotas = dict(quotas)
        self._handoff_ms = int(handoff_s * 1000)
        self._template, self._embed = message_template(EXECUTE_TASK, queue=OPERATIONS_QUEUE)
        self._dispatch = scripts.register(client, "dispatch")
        self._sweep = scripts.register(client, "ready_sweep")
        self._published = False
        self._script_keys = [
            keys.ready,
            keys.wake,
            keys.quotas,
            keys.dispatched,
            keys.leases,
            keys.capacity,
            keys.queue(OPERATIONS_QUEUE),
        ]

    def publish(self, accounts: Iterable[str] | None = None) -> int:
        """Store these accounts' quotas for the script and put those with work in the ready set.

        Run at a worker's start (every account), and for accounts whose quota the script found
        missing or that changed. Each quota goes to the quotas hash (what the previous version reads)
        and to the account's limiter state (read with the rest of it, one ``HMGET`` per slot), in one
        round trip. Returns how many of them have work waiting.
        """
        names = [name for name in (self.quotas if accounts is None else accounts) if name in self.quotas]
        waiting = 0
        for start in range(0, len(names), SWEEP_CHUNK):
            chunk = names[start : start + SWEEP_CHUNK]
            mapping = {name: self.quotas[name].stored() for name in chunk}
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(self._keys.quotas, mapping=mapping)  # type: ignore[arg-type]  # str values
                for name, stored in mapping.items():
                    pipe.hset(self._keys.limiter_state(name), STATE_FIELD, stored)
                pipe.execute()
            args = [self._keys.lane_prefix, self._keys.delayed(""), *chunk]
            waiting += int(self._sweep(keys=[self._keys.ready, self._keys.wake], args=args))
        self._published = True
        return waiting

    def run(self, account: str = "") -> Dispatched:
        """Serve the due accounts (or ``account``, whatever its time) now; what happened and when to look again."""
        if not self._published:
            self.publish()
        args: list[str | int] = [
            self._keys.job_prefix,
            self._keys.lane_prefix,
            self._keys.delayed(""),
            self._keys.limiter_prefix,
            self._handoff_ms,
            self._template,
            self._embed,
            BATCH,
            ACCOUNTS_PER_CALL,
            account,
        ]
        outcome, given, next_ms, *unknown = self._dispatch(keys=self._script_keys, args=args)
        known = [name for name in map(text, unknown) if name in self.quotas]
        if known:  # their quota was lost (a Redis restored from an older snapshot): store it again
            log.warning("dispatch: no quota stored for %d account(s) this worker knows; stored again", len(known))
            self.publish(known)
            return Dispatched("more", int(given), 0.0)
        kind = text(outcome)
        wait_ms = int(next_ms)
        return Dispatched(kind, int(given), None if wait_ms < 0 else wait_ms / 1000)


class DispatchLoop:
    """A worker's dispatch: serves the due accounts whenever one is due or a wake-up comes.

    Two daemon threads: ``bridge-wake`` blocks on the wake list and pokes the other;
    ``bridge-dispatch`` calls the dispatcher, then waits for a poke or for the earliest next slot
    (at most ``SAFETY_WAIT_S``). A poke during a call makes another call at once, so no wake-up is
    lost between the two. Redis trouble is logged once and retried every half second.
    """

    def __init__(self, client: redis.Redis, keys: Keys, dispatcher: Dispatcher) -> None:
        self._redis = client
        self._keys = keys
        self.dispatcher = dispatcher
        self._poke = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start both threads."""
        for name, target in (("bridge-wake", self._listen), ("bridge-dispatch", self._dispatch_forever)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop both threads (the listener ends with its current ``BLPOP``, within ``WAKE_BLOCK_S``)."""
        self._stop.set()
        self._poke.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def _listen(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                if self._redis.blpop([self._keys.wake], timeout=WAKE_BLOCK_S) is not None:
                    self._poke.set()
                failing = _recovered("wake-up listener", failing)
            except redis.RedisError as exc:
                failing = _failed("wake-up listener", exc, failing)
                self._stop.wait(0.5)

    def _dispatch_forever(self) -> None:
        failing = False
        while not self._stop.is_set():
            self._poke.clear()
            try:
                result = self.dispatcher.run()
                failing = _recovered("dispatch", failing)
            except redis.RedisError as exc:
                failing = _failed("dispatch", exc, failing)
                self._stop.wait(0.5)
                continue
            except Exception:
                log.exception("dispatch failed; trying again")
                self._stop.wait(0.5)
                continue
            if result.outcome == "more":
                continue
            wait = SAFETY_WAIT_S
            if result.outcome != "busy" and result.next_in_s is not None:
                wait = min(wait, result.next_in_s)
            if wait > 0:
                self._poke.wait(wait)


def _failed(what: str, exc: redis.RedisError, failing: bool) -> bool:
    if not failing:
        log.warning("%s: Redis unavailable (%s); retrying", what, type(exc).__name__)
    return True


def _recovered(what: str, failing: bool) -> bool:
    if failing:
        log.info("%s: working again", what)
    return False
