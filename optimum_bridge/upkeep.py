"""The worker's background work: every timer in one loop, in one thread per worker process.

| timer | every | what |
| --- | --- | --- |
| due pump | 0.25 s | moves retries, deferrals and callback redeliveries that are due to their queues (``due``) |
| heartbeat | 1 s | records that this worker is alive, for ``/readyz`` and the demo (``Heartbeat``) |
| callback recovery | 2 s | queues again pending callbacks whose message was lost (``deliveries.recover``) |
| audit | 0.5 s | runs a requested audit of jobs left without a message, once it has settled (``audit``) |

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

from .keys import Keys

log = logging.getLogger(__name__)

#: A worker silent for this long is forgotten by the heartbeat set (it no longer grows with restarts).
FORGET_AFTER_S = 86400


class Heartbeat:
    """Records worker ``name`` as alive, on the Redis clock."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str) -> None:
        self._redis = client
        self._keys = keys
        self.name = name

    def beat(self) -> None:
        """Say we are alive now; forget workers silent for a day."""
        now = float(self._redis.time()[0])
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._keys.workers, {self.name: now})
            pipe.zremrangebyscore(self._keys.workers, "-inf", now - FORGET_AFTER_S)
            pipe.execute()


@dataclass
class Timer:
    """One piece of background work and how often it runs."""

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
        now = self._clock()
        for timer in self.timers:
            if now >= timer.due:
                self._run(timer)
                timer.due = now + timer.every_s
        return max(0.0, min(timer.due for timer in self.timers) - self._clock())

    def _run(self, timer: Timer) -> None:
        try:
            timer.run()
        except redis.RedisError as exc:
            log.warning("upkeep %s: Redis unavailable (%s); retrying", timer.name, type(exc).__name__)
            timer.failing = True
        except Exception:
            log.exception("upkeep %s failed; the other timers go on", timer.name)
            timer.failing = True
        else:
            if timer.failing:
                log.info("upkeep %s: working again", timer.name)
            timer.failing = False

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


def worker_timers(name: str) -> list[Timer]:
    """The timers of a worker process, built on this process's runtime."""
    from . import runtime  # the runtime is installed by the worker module before the worker starts

    rt = runtime.current()
    heartbeat = Heartbeat(rt.redis, rt.keys, name)
    return [
        Timer("due pump", 0.25, rt.due.pump),
        Timer("heartbeat", 1.0, heartbeat.beat),
        Timer("callback recovery", 2.0, rt.deliveries.recover),
        Timer("audit", 0.5, rt.audit.maybe_run),
    ]


class UpkeepStep(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
    """Worker bootstep: the upkeep loop lives as long as the worker."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.upkeep: Upkeep | None = None

    def start(self, worker: Any) -> None:
        self.upkeep = Upkeep(worker_timers(f"{worker.hostname}:{os.getpid()}"))
        self.upkeep.start()

    def stop(self, worker: Any) -> None:
        if self.upkeep is not None:
            self.upkeep.stop()
