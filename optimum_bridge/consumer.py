"""Close kombu's gap between popping a message and recording it as unacknowledged.

Kombu's Redis transport takes a message with ``BRPOP`` and only then, in a
second round trip, writes it to its ``unacked`` hash. If Redis goes away
between the two (a restart, a dropped connection), the message exists only in
this process, kombu drops it with the failed connection, and its job stays
``queued`` for ever: nothing is left in Redis to redeliver.

``RecordUnacked`` is a consumer bootstep that wraps the task channel's
``QoS.append`` so that the record is retried until Redis answers again, for at
most ``budget_s`` (the broker's socket timeouts, set in ``worker.py``, keep
each try short); the message is then handled as usual. Redelivery stays
harmless (the executor's claim runs a finished job only once), so writing the
same record twice after a lost reply costs nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker import state

from . import runtime

log = logging.getLogger(__name__)

Append = Callable[[Any, str], None]


SHUTDOWN_GRACE_S = 10.0


def retried_errors(connection_errors: tuple[type[BaseException], ...]) -> tuple[type[BaseException], ...]:
    """The transport's connection errors, less ``KeyError`` (kombu lists it; retrying cannot cure it)."""
    return tuple(error for error in connection_errors if not issubclass(error, KeyError))


def retrying_append(
    append: Append,
    errors: tuple[type[BaseException], ...],
    budget_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Append:
    """``append`` retried on ``errors`` with backoff (50 ms doubling to 1 s) for at most ``budget_s``;
    at most ``SHUTDOWN_GRACE_S`` more once a warm shutdown starts, and not at all in a cold one."""

    def append_retrying(message: Any, delivery_tag: str) -> None:
        deadline = time.monotonic() + budget_s
        delay = 0.05
        while True:
            try:
                return append(message, delivery_tag)
            except errors as exc:
                task_id = (getattr(message, "headers", None) or {}).get("id")
                if state.should_stop is not None:
                    deadline = min(deadline, time.monotonic() + SHUTDOWN_GRACE_S)
                if time.monotonic() + delay > deadline or state.should_terminate not in (None, False):
                    log.error("task %s: not recorded as unacknowledged (%s); its job stays queued", task_id, exc)
                    raise
                log.warning("task %s: broker unreachable while recording the message (%s); retrying", task_id, exc)
                sleep(delay)
                delay = min(delay * 2, 1.0)

    return append_retrying


class RecordUnacked(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
    """Consumer step, run at each (re)connect once the task consumer exists: wrap its QoS, request an audit."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.budget_s = float(parent.app.conf.get("bridge_unacked_record_budget_s", 60.0))

    def start(self, parent: Any) -> None:
        # A consumer (re)starting may follow a lost connection, and a reply lost with it:
        # ask for an audit of jobs left without a message (audit.py).
        runtime.current().audit.request()
        channel = parent.task_consumer.channel
        qos = channel.qos
        if not getattr(qos, "bridge_retrying", False):
            qos.append = retrying_append(qos.append, retried_errors(channel.connection_errors), self.budget_s)
            qos.bridge_retrying = True
