"""The kombu and Celery internals a worker's consumer relies on: items 3 to 6 of ``process.kombu``.

That module's docstring lists every assumption, and
``tests/integration/test_broker_contract.py`` checks them against the pinned
versions; here are the pop-then-record gap (``record_unacked_step``), the
transport options (``transport_options``), the consumer's heartbeat
(``watch_consumer_step``) and reconnecting (``consumer_class``). Celery is
imported inside the functions that use it, so importing this module costs a
process that builds no worker nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from queue import Empty
from typing import Any

from optimum_bridge.keys import CALLBACKS_QUEUE, OPERATIONS_QUEUE
from optimum_bridge.process import watchdog
from optimum_bridge.process.redis import broker_connection
from optimum_bridge.settings import Settings

log = logging.getLogger(__name__)

#: How long a popped message may wait for its unacked record once a warm shutdown starts.
SHUTDOWN_GRACE_S = 10.0

# -- 3. the pop-then-record gap ---------------------------------------------------------------

Append = Callable[[Any, str], None]


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

    from celery.worker import state  # noqa: PLC0415 - Celery only in workers

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


def tolerant(method: Callable[..., Any], what: str) -> Callable[..., Any]:
    """A ``QoS`` method (``ack``, ``reject``, ``restore_unacked``) that logs instead of killing the worker
    when its channel's connection is gone.

    After a Sentinel failover, Celery closes the lost connection; a message taken through it and
    finished later (acknowledged, rejected, or given back as the channel closes) reaches Redis
    through a pool rebuilt from a transport without its client (kombu 5.7: ``AttributeError`` on
    ``conninfo.hostname`` or ``connection.client``), and Celery stops the worker ("Unrecoverable
    error"). Such a message is still in the unacked hash and comes back with the visibility
    timeout (a finished job's message is then refused by its claim), so the worker goes on.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except AttributeError as exc:
            log.warning("broker: %s skipped, its connection is gone (%s); back after the visibility timeout", what, exc)
            return None

    return call


def record_unacked_step() -> type:
    """The consumer step ``RecordUnacked`` (built on first use: Celery is imported only by workers)."""
    from celery import bootsteps  # noqa: PLC0415 - Celery only in workers

    class RecordUnacked(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
        """Consumer step, run at each (re)connect once the task consumer exists.

        It wraps the task channel's ``QoS.append`` so that a popped message is held
        until Redis can record it (retried for at most ``bridge_unacked_record_budget_s``)
        instead of being dropped with a failed connection.
        """

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.budget_s = float(parent.app.conf.get("bridge_unacked_record_budget_s", 60.0))

        def start(self, parent: Any) -> None:
            channel = parent.task_consumer.channel
            qos = channel.qos
            if not getattr(qos, "bridge_retrying", False):
                qos.append = retrying_append(qos.append, retried_errors(channel.connection_errors), self.budget_s)
                for name in ("ack", "reject", "restore_unacked"):
                    setattr(qos, name, tolerant(getattr(qos, name), name))
                qos.bridge_retrying = True

    return RecordUnacked


# -- 4. transport options ---------------------------------------------------------------------


def broker_url(settings: Settings) -> str:
    """``BRIDGE_REDIS_URL`` as kombu names it (``redis+socket://``, ``sentinel://...;sentinel://...``)."""
    return broker_connection(settings)[0]


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's Redis transport options: our key prefix, and redelivery within the configured timeout."""
    return {
        **broker_connection(settings)[1],  # master_name and sentinel_kwargs, through Sentinel
        "global_keyprefix": settings.key_prefix,
        # A dead worker's message is visible again after ~0.75 x the timeout, and swept
        # every 0.2 x the timeout, so it runs again within BRIDGE_REDELIVERY_TIMEOUT_S.
        "visibility_timeout": settings.redelivery_timeout_s * 0.75,
        "unacked_restore_interval": max(1, int(settings.redelivery_timeout_s * 0.2)),
        "unacked_restore_throttle": 1,
        "health_check_interval": 10,
        # Bounded waits: a partitioned Redis fails a call instead of blocking the consumer.
        "socket_connect_timeout": 10,
        "socket_timeout": 30,
    }


def task_queues() -> tuple[Any, ...]:
    """The queues a worker consumes when no ``-Q`` is given: operations and callbacks."""
    from kombu.entity import Exchange, Queue  # noqa: PLC0415 - kombu only in workers

    return tuple(
        Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
        for name in (OPERATIONS_QUEUE, CALLBACKS_QUEUE)
    )


# -- 5. the consumer's heartbeat ---------------------------------------------------------------


def exit_stuck_worker(line: str) -> None:
    """Log ``line`` and exit at once with ``watchdog.EXIT_CODE``.

    ``os._exit``: a stuck consumer may hold the locks a clean shutdown would wait on. Unacked
    messages come back after the visibility timeout and the jobs' own recovery, as after a SIGKILL.
    """
    log.critical(line)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(watchdog.EXIT_CODE)


def watch_consumer_step() -> type:
    """The consumer step ``WatchConsumer`` (built on first use: Celery is imported only by workers)."""
    from celery import bootsteps  # noqa: PLC0415 - Celery only in workers

    class WatchConsumer(bootsteps.StartStopStep):  # type: ignore[misc]  # celery ships no types
        """Consumer step: a heartbeat on every answer to the task channel's ``BRPOP``.

        kombu reads each answer through ``channel.handlers["BRPOP"]`` (``Channel._brpop_read``,
        bound at the channel's creation): a message, or ``Empty`` when the one-second timeout
        passed; ``channel.qos.can_consume()`` says whether a ``BRPOP`` is due at all.
        """

        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            limit_s = float(parent.app.conf.get("bridge_consumer_limit_s", watchdog.LIMIT_S))
            self.watchdog = watchdog.ConsumerWatchdog(exit_stuck_worker, limit_s=limit_s)

        def start(self, parent: Any) -> None:
            channel = parent.task_consumer.channel
            read = channel.handlers["BRPOP"]
            beat = self.watchdog.beat
            if not getattr(read, "bridge_watched", False):

                def read_and_beat(**options: Any) -> Any:
                    try:
                        result = read(**options)
                    except Empty:
                        beat()
                        raise
                    beat()
                    return result

                read_and_beat.bridge_watched = True  # type: ignore[attr-defined]
                channel.handlers["BRPOP"] = read_and_beat
            self.watchdog.connected(channel.qos.can_consume)
            self.watchdog.start()

        def stop(self, parent: Any) -> None:
            self.watchdog.disconnected()

        def shutdown(self, parent: Any) -> None:
            self.watchdog.stop()

    return WatchConsumer


# -- 6. reconnecting -------------------------------------------------------------------------

#: A lost broker connection is tried again after 0.2 s, then 0.5 s more each time, up to 2 s
#: (kombu's defaults, which Celery's consumer keeps: 2 s, then 2 s more each time, up to 30 s,
#: so that a two-second failover kept a worker from its queue for six or more).
RECONNECT_INTERVALS: dict[str, float] = {"interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def consumer_class() -> type:
    """Celery's consumer, reconnecting at ``RECONNECT_INTERVALS`` (the ``worker_consumer`` setting)."""
    from celery.worker.consumer import Consumer  # noqa: PLC0415 - Celery only in workers

    class BridgeConsumer(Consumer):  # type: ignore[misc]  # celery ships no types
        """``Consumer.ensure_connected`` calls ``conn.ensure_connection`` without intervals."""

        def ensure_connected(self, conn: Any) -> Any:
            conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT_INTERVALS)
            return super().ensure_connected(conn)

    return BridgeConsumer
