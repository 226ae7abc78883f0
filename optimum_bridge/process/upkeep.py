"""The worker's background work: every timer in one loop, in one thread per worker process.

- **heartbeat**, every 1 s: this worker is alive, with its threads for operations
  (``/readyz``, the demo, and the dispatcher's capacity: ``Heartbeat``);
- **dispatch**, at each slot: gives the free quota slots to the best waiting
  jobs (``quota.dispatcher.Dispatcher``), which says when the next slot is due so the
  loop wakes right then; every 50 ms when nothing waits;
- **job recovery**, every 0.5 s: puts back in their lane the jobs whose message
  or worker was lost (``jobs.recovery``);
- **due pump**, every 0.25 s: moves due callback redeliveries to their queue (``jobs.due``);
- **callback recovery**, every 2 s: queues again pending callbacks whose message
  was lost, or that were left to it (``callbacks.deliveries.sweep``), at once again while
  it finds 100 at a time;
- **schedules**, every second or at the next tick: claims the due ticks of every
  schedule in one script and makes their batches (``schedules.runner``);
- **openapi ACCOUNT**, every minute: at start and then daily (hourly while it
  fails), one worker of all fetches the account's OpenAPI document into Redis, in
  a thread of its own, for producers' checks (``upstream.documents``, ``DocumentFetcher``).

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

import httpx
import redis
from celery import bootsteps

from optimum_bridge.errors import BridgeError, ConfigError
from optimum_bridge.keys import OPERATIONS_QUEUE, Keys
from optimum_bridge.lua import scripts
from optimum_bridge.process import kombu as broker
from optimum_bridge.process import runtime
from optimum_bridge.quota.dispatcher import Dispatched
from optimum_bridge.schedules.runner import worker_runner
from optimum_bridge.upstream.documents import DocumentStore
from optimum_bridge.upstream.openapi import fetch_document

log = logging.getLogger(__name__)

#: A worker silent for this long is forgotten by the heartbeat set (it no longer grows with restarts).
FORGET_AFTER_S = 86400


#: How often the API's OpenAPI document is fetched again, and again after a failure.
DOCUMENT_EVERY_S = 86400.0
DOCUMENT_RETRY_S = 3600.0

#: A worker whose last heartbeat is older than this no longer counts in the dispatcher's capacity.
ALIVE_S = 5


class Heartbeat:
    """Records worker ``name`` as alive, with the threads it gives to operations, on the Redis clock."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str, *, threads: int) -> None:
        self._keys = keys
        self.name = name
        self.threads = threads
        self._beat = scripts.register(client, "heartbeat")

    def beat(self) -> int:
        """Say we are alive now; returns the threads of every live worker (the capacity)."""
        keys = [self._keys.workers, self._keys.worker_threads, self._keys.capacity]
        return int(self._beat(keys=keys, args=[self.name, self.threads, ALIVE_S, FORGET_AFTER_S]))


@dataclass
class Timer:
    """One piece of background work and how often it runs.

    ``run`` may return the seconds until it wants to run again (a float, or the
    dispatcher's ``Dispatched``: the next slot); any other value keeps ``every_s``.
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
        if isinstance(wanted, Dispatched):
            return wanted.next_in_s
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
        Timer("heartbeat", 1.0, heartbeat.beat),
        *(Timer(f"dispatch {account}", 0.05, dispatcher.run) for account, dispatcher in rt.dispatchers.items()),
        Timer("job recovery", 0.5, rt.recovery.run),
        Timer("due pump", 0.25, rt.due.pump),
        Timer("callback recovery", 2.0, rt.deliveries.sweep),
        Timer("schedules", 1.0, worker_runner(rt.settings, rt.redis, rt.keys, owner=name, alive_s=ALIVE_S).run),
        *(Timer(f"openapi {account}", 60.0, fetcher.run) for account, fetcher in _fetchers(rt).items()),
    ]


def _fetchers(rt: Any) -> dict[str, DocumentFetcher]:
    store = DocumentStore(rt.redis, rt.keys)
    return {name: DocumentFetcher(rt, store, name) for name in rt.settings.accounts.names}


class DocumentFetcher:
    """Fetches one account's OpenAPI document into Redis, once a day for every worker sharing the Redis.

    ``run`` (the timer, every minute) never waits on the network: the fetch runs in a thread of its own,
    so a slow document cannot delay heartbeats or slots. A claim key with a day's TTL (an hour after a
    failure) says a fetch is fresh, so one worker fetches and the others skip.
    """

    def __init__(self, rt: Any, store: DocumentStore, account: str) -> None:
        self._rt = rt
        self._store = store
        self.account = account
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Start a fetch in the background when none is fresh (claimed) and none is running here."""
        if self._thread is not None and self._thread.is_alive():
            return
        claim = self._rt.keys.openapi_claim(self.account)
        if not self._rt.redis.set(claim, os.getpid(), nx=True, ex=int(DOCUMENT_EVERY_S)):
            return
        self._thread = threading.Thread(target=self._fetch_claimed, name=f"openapi-{self.account}", daemon=True)
        self._thread.start()

    def _fetch_claimed(self) -> None:
        try:
            wait_s = self.fetch_now()
            if wait_s != DOCUMENT_EVERY_S:
                self._rt.redis.expire(self._rt.keys.openapi_claim(self.account), int(wait_s))
        except Exception:  # a thread of its own: log, never die silently
            log.exception("openapi %s: fetch failed", self.account)

    def fetch_now(self) -> float:
        """Fetch and store the document now; the seconds until the next fetch is due."""
        account = self._rt.settings.accounts[self.account]
        try:
            tokens = self._rt.accounts[self.account].tokens
        except ConfigError:
            tokens = None
        try:
            document = fetch_document(self._rt.api_http, account.document_url, api_url=account.api_url, tokens=tokens)
        except (httpx.HTTPError, ValueError, BridgeError) as exc:
            log.warning(
                "openapi %s: no document from %s (%s); retrying in 1 h", self.account, account.document_url, exc
            )
            return DOCUMENT_RETRY_S
        self._store.put(self.account, document)
        log.info("openapi %s: document stored (%d paths)", self.account, len(document["paths"]))
        return DOCUMENT_EVERY_S

    def join(self, timeout_s: float) -> None:
        """Wait for a background fetch (tests)."""
        if self._thread is not None:
            self._thread.join(timeout_s)


def operation_threads(worker: Any) -> int:
    """The threads a Celery worker gives to operations: its concurrency, or 0 if ``-Q`` leaves them out."""
    consumes = worker.app.amqp.queues.consume_from
    return int(worker.concurrency) if OPERATIONS_QUEUE in consumes else 0


class UpkeepStep(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
    """Worker bootstep: the upkeep loop lives as long as the worker.

    It starts after the pool, so a prefork pool's first children are forked
    before the upkeep thread exists, and prepares in this (the main) thread what
    the loop would otherwise build first (see ``process.runtime.lazy`` and
    ``process.kombu.prepare``), so a child forked later finds no lock held.
    """

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.upkeep: Upkeep | None = None

    def start(self, worker: Any) -> None:
        name = f"{worker.hostname}:{os.getpid()}"
        broker.prepare()
        self.upkeep = Upkeep(worker_timers(name, threads=operation_threads(worker)))
        self.upkeep.start()

    def stop(self, worker: Any) -> None:
        if self.upkeep is not None:
            self.upkeep.stop()
