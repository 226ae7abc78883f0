"""The watchdog of a worker's Celery consumer: connected, yet consuming nothing (spec §16).

After a Redis failover or restart, Celery's Redis transport has been seen to
reconnect and then never ask for a message again (celery#8030, #8082, #9054,
#10096): the worker looks alive and its queue grows. Its supervisor cannot
tell, so the worker tells it: it logs one line and exits non-zero.

The evidence is the consumer's own heartbeat. A consumer that may take a
message keeps a ``BRPOP`` with a one-second server-side timeout open, so the
broker answers it at least once a second, message or not -- an idle worker
beats as steadily as a busy one. ``beat`` is called on each answer (the hook
is in ``kombu_worker.watch_consumer_step``). No answer for ``limit_s`` while the
consumer is connected (between its step's ``start`` and ``stop``, which
Celery calls around each reconnect) and while it has room for a message
(``can_consume``: with every slot busy it rightly asks for none) means it is
stuck. An outage does not count: the consumer is then reconnecting, not
connected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from optimum_bridge.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

#: Stuck after this long without an answer (spec: detected within 30 s; kombu drops a half-open
#: BRPOP connection itself after ~11 s with our transport options, which is a reconnect, not this).
LIMIT_S = 20.0
CHECK_EVERY_S = 1.0
#: EX_SOFTWARE: the supervisor restarts the worker (``restart: unless-stopped``, systemd ``on-failure``).
EXIT_CODE = 70


class ConsumerWatchdog:
    """Calls ``on_stuck`` once when a connected consumer with room for a message hears nothing for ``limit_s``."""

    def __init__(
        self, on_stuck: Callable[[str], None], *, limit_s: float = LIMIT_S, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._on_stuck = on_stuck
        self._limit_s = limit_s
        self._clock = clock
        self._lock = threading.Lock()
        self._can_consume: Callable[[], bool] | None = None
        self._last = 0.0
        self._fired = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def connected(self, can_consume: Callable[[], bool]) -> None:
        """The consumer (re)connected: watch it from now."""
        with self._lock:
            self._can_consume = can_consume
            self._last = self._clock.monotonic()

    def disconnected(self) -> None:
        """The consumer lost its connection (or is stopping): not ours to judge until it reconnects."""
        with self._lock:
            self._can_consume = None

    def beat(self) -> None:
        """The broker answered the consumer."""
        self._last = self._clock.monotonic()

    def check(self) -> bool:
        """Whether the consumer is stuck now (calls ``on_stuck`` the first time it is)."""
        with self._lock:
            if self._can_consume is None or self._fired:
                return False
            now = self._clock.monotonic()
            if not self._can_consume():  # every slot busy: it asks for nothing, rightly
                self._last = now
                return False
            silent_s = now - self._last
            if silent_s < self._limit_s:
                return False
            self._fired = True
        self._on_stuck(
            f"worker: the Celery consumer is connected but got no answer from the broker for {silent_s:.0f}s; "
            f"exiting with code {EXIT_CODE} so that the supervisor restarts it"
        )
        return True

    def start(self) -> None:
        """Check every second in a daemon thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="consumer-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop checking (the worker is shutting down)."""
        self._stop.set()
        self.disconnected()

    def _run(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.check()
            except Exception:  # a failing check must not end the watch, nor the worker
                log.exception("worker: the consumer watchdog's check failed")
