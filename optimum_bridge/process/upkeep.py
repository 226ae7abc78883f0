"""The worker's background work: every timer in one loop, in one thread per worker process.

- **heartbeat**, every 2 s: this worker is alive, with its threads for operations
  (``/readyz``, the demo, and the dispatcher's capacity: ``Heartbeat``);
- **job recovery**, every second: puts back in their lane the jobs whose message
  or worker was lost (``jobs.recovery``);
- **due pump**, when the earliest entry is due, at least every 2 s: moves due
  callback redeliveries to their queue (``jobs.due``);
- **callback recovery**, every 2 s: queues again pending callbacks whose message
  was lost, or that were left to it (``callbacks.deliveries.sweep``), at once again while
  it finds 100 at a time;
- **schedules**, every 2 s or at the next tick: claims the due ticks of every
  schedule in one script and makes their batches (``schedules.runner``);
- **accounts**, every second: one ``GET`` of the accounts' version; when accounts were created,
  changed or removed at runtime (spec §12a), this worker's view follows (``accounts.registry``) and
  so do the quotas its dispatcher reads (``AccountsFollower``); every 5 s, the jobs still waiting on
  an account removed in the last day are cancelled (``accounts.removal``), one command when none was;
- **openapi**, every 5 s: the accounts whose OpenAPI document is due
  (``keys.openapi_due``: asked by a producer that found none, then daily, hourly
  while it fails): one worker of all fetches each into Redis, in a thread of its
  own, for producers' checks (``upstream.fetchers``, ``upstream.documents``). One command a
  tick, whatever the number of accounts.

Dispatch is not a timer: ``quota.dispatcher.DispatchLoop`` serves the
accounts as their slots fall due and as work arrives, in threads of its own,
started and stopped with this loop. With nothing queued a worker costs Redis
under 20 commands a second, whatever the number of accounts (``python -m
bench idle``).

Each timer is isolated: one that fails (Redis away, a bug) is logged and tried
again at its next turn, and never stops the others. ``UpkeepStep`` is the
Celery worker bootstep that starts the loop with the worker and stops it at
shutdown; every worker runs one, any one of them is enough, none is special.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import bootsteps

from optimum_bridge.accounts.follower import AccountsFollower
from optimum_bridge.keys import OPERATIONS_QUEUE, Keys
from optimum_bridge.lua import scripts
from optimum_bridge.process import kombu as broker
from optimum_bridge.process import runtime
from optimum_bridge.quota.dispatcher import DispatchLoop
from optimum_bridge.schedules.runner import worker_runner
from optimum_bridge.upstream.fetchers import DOCUMENT_TICK_S, DocumentFetchers

log = logging.getLogger(__name__)

#: A worker silent for this long is forgotten by the heartbeat set (it no longer grows with restarts).
FORGET_AFTER_S = 86400


#: How often a worker looks for accounts changed at runtime, and for jobs of removed ones.
ACCOUNTS_TICK_S = 1.0
REMOVED_TICK_S = 5.0

#: A worker whose last heartbeat is older than this no longer counts in the dispatcher's capacity.
ALIVE_S = 5
#: How often a worker says it is alive (at most 2.5 beats per ``ALIVE_S``: one missed beat is no death).
HEARTBEAT_S = 2.0


class Heartbeat:
    """Records worker ``name`` as alive, with the threads it gives to operations, on the Redis clock."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str, *, threads: int) -> None:
        self._keys = keys
        self.name = name
        self.threads = threads
        self._beat = scripts.register(client, "heartbeat")

    def beat(self) -> int:
        """Say we are alive now; returns the threads of every live worker (the capacity)."""
        keys = [self._keys.workers, self._keys.worker_threads, self._keys.capacity, self._keys.ready, self._keys.wake]
        return int(self._beat(keys=keys, args=[self.name, self.threads, ALIVE_S, FORGET_AFTER_S]))


@dataclass
class Timer:
    """One piece of background work and how often it runs.

    ``run`` may return the seconds until it wants to run again (a float); any other
    value keeps ``every_s``.
    """

    name: str
    every_s: float
    run: Callable[[], object]
    due: float = 0.0
    failing: bool = field(default=False, repr=False)


class Upkeep:
    """Runs its timers, each in turn when due, until stopped."""

    def __init__(self, timers: list[Timer], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.timers = timers
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_due(self) -> float:
        """Run every timer that is due; returns the seconds until the next one is."""
        for timer in self.timers:
            now = self._clock()
            if now >= timer.due:
                timer.due = now + self._run(timer)
        return max(0.0, min(timer.due for timer in self.timers) - self._clock())

    def _run(self, timer: Timer) -> float:
        """Run one timer; returns the seconds until its next turn."""
        try:
            wanted = timer.run()
        except redis.RedisError as exc:
            log.warning("upkeep %s: Redis unavailable (%s); retrying", timer.name, type(exc).__name__)
            timer.failing = True
            return max(timer.every_s, 0.5)
        except Exception:
            log.exception("upkeep %s failed; the other timers go on", timer.name)
            timer.failing = True
            return max(timer.every_s, 0.5)
        if timer.failing:
            log.info("upkeep %s: working again", timer.name)
        timer.failing = False
        if isinstance(wanted, float):
            return wanted
        return timer.every_s

    def run_forever(self) -> None:
        """The loop; returns once ``stop`` is called."""
        while not self._stop.is_set():
            self._stop.wait(self.run_due())

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(target=self.run_forever, name="bridge-upkeep", daemon=True)
        self._thread.start()

    def stop(self, *, timeout_s: float = 5.0) -> None:
        """Stop the loop and wait for its current turn to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def worker_timers(name: str, *, threads: int) -> list[Timer]:
    """The timers of a worker process, built on this process's runtime."""
    rt = runtime.current()
    heartbeat = Heartbeat(rt.redis, rt.keys, name, threads=threads)
    return [
        Timer("heartbeat", HEARTBEAT_S, heartbeat.beat),
        Timer("job recovery", 1.0, rt.recovery.run),
        Timer("due pump", 1.0, rt.due.run),
        Timer("callback recovery", 2.0, rt.deliveries.sweep),
        Timer("schedules", 1.0, worker_runner(rt.settings, rt.redis, rt.keys, owner=name, alive_s=ALIVE_S).run),
        Timer("accounts", ACCOUNTS_TICK_S, AccountsFollower(rt).run),
        Timer("removed accounts", REMOVED_TICK_S, rt.removal.sweep),
        Timer("openapi", DOCUMENT_TICK_S, DocumentFetchers(rt).run),
    ]


def dispatch_loop() -> DispatchLoop:
    """The dispatch of a worker process, built (not started) on this process's runtime."""
    rt = runtime.current()
    return DispatchLoop(rt.redis, rt.keys, rt.dispatcher)


def operation_threads(worker: Any) -> int:
    """The threads a Celery worker gives to operations: its concurrency, or 0 if ``-Q`` leaves them out."""
    consumes = worker.app.amqp.queues.consume_from
    return int(worker.concurrency) if OPERATIONS_QUEUE in consumes else 0


class UpkeepStep(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
    """Worker bootstep: the upkeep loop lives as long as the worker.

    It starts after the pool, so a prefork pool's first children are forked
    before the upkeep thread exists, and prepares in this (the main) thread what
    the loop would otherwise build first (see ``process.lazy.lazy`` and
    ``process.kombu.prepare``), so a child forked later finds no lock held.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.upkeep: Upkeep | None = None
        self.dispatch: DispatchLoop | None = None

    def start(self, worker: Any) -> None:
        name = f"{worker.hostname}:{os.getpid()}"
        broker.prepare()
        self.upkeep = Upkeep(worker_timers(name, threads=operation_threads(worker)))
        self.dispatch = dispatch_loop()
        self.upkeep.start()
        self.dispatch.start()

    def stop(self, worker: Any) -> None:
        if self.dispatch is not None:
            self.dispatch.stop()
        if self.upkeep is not None:
            self.upkeep.stop()
