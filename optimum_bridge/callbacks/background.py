"""A finished job's first callback delivery, made off the worker thread (issue 17).

The thread that finished a job goes straight on to its next call (``jobs.executor``);
the callback's first delivery (``CallbackSender.deliver_held``) is made by a few
threads of the same process meanwhile, as a plain Celery task would have the
next message prefetched. When as many deliveries wait as the pool may hold (a
receiver slower than the API), a callback goes to the delivery path at once,
attempt 1 with the full timeout (``hand_over``), instead of waiting: a slow
receiver never holds a worker thread, nor lets deliveries pile up in memory.
A process that dies with deliveries waiting leaves them to the callbacks
watch, which queues them after the hold (``hold_ms``), as before; a warm
shutdown waits for them (the pool's threads are joined at exit).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from optimum_bridge.callbacks.sender import CallbackSender

log = logging.getLogger(__name__)


class BackgroundDelivery:
    """``jobs.executor.FirstDelivery`` through a small pool of threads; at most ``backlog`` waiting."""

    def __init__(self, sender: CallbackSender, *, threads: int, backlog: int) -> None:
        self._sender = sender
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bridge-callback")
        self._room = threading.BoundedSemaphore(backlog)

    @property
    def hold_ms(self) -> int:
        """How long the callbacks watch leaves a held callback to this pool."""
        return self._sender.hold_ms

    def deliver_held(self, subject: str, fields: dict[str, str] | None) -> str:
        """Queue the first delivery for the pool (``submitted``), or hand it over when the pool is full."""
        if not self._room.acquire(blocking=False):
            log.info("%s: first deliveries waiting at their limit; callback handed to the delivery path", subject)
            return self._sender.hand_over(subject)
        try:
            self._pool.submit(self._deliver, subject, fields)
        except RuntimeError:  # the pool shut down: this process is exiting
            self._room.release()
            return self._sender.hand_over(subject)
        return "submitted"

    def _deliver(self, subject: str, fields: dict[str, str] | None) -> None:
        try:
            self._sender.deliver_held(subject, fields)
        except Exception:  # deliver_held settles what it can; what is left, the watch queues again
            log.exception("%s: first callback delivery not settled; the callbacks watch queues it again", subject)
        finally:
            self._room.release()
