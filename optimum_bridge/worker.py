"""The Celery app: ``celery -A optimum_bridge.worker worker`` (or ``optimum-bridge worker``).

Settings are read once at import; a bad one stops the process with one line.
Each worker process also runs the due-set pump (retries, deferrals and
callback redeliveries waiting for their time) and a heartbeat for ``/readyz``.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from . import runtime
from .broker import task_queues
from .consumer import RecordUnacked
from .errors import ConfigError
from .keys import CALLBACKS_QUEUE, OPERATIONS_QUEUE
from .messages import DELIVER_TASK, EXECUTE_TASK, DuePump
from .observability import init_sentry
from .settings import Settings, load_settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Celery:
    """A Celery app bound to the bridge's Redis, queues and delivery guarantees."""
    app = Celery("optimum_bridge", set_as_current=True)
    broker_url = settings.redis_url.get_secret_value()
    if broker_url.startswith("unix://"):  # kombu names the Redis unix-socket transport differently
        broker_url = "redis+socket://" + broker_url.removeprefix("unix://")
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options={
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
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=OPERATIONS_QUEUE,
        # Both queues by default, so `celery -A optimum_bridge.worker worker` (or a systemd unit,
        # `celery multi`...) runs operations *and* callbacks; `-Q` still narrows a worker to one.
        task_queues=task_queues(),
        task_routes={EXECUTE_TASK: {"queue": OPERATIONS_QUEUE}, DELIVER_TASK: {"queue": CALLBACKS_QUEUE}},
        # The pool is chosen on the command line (``optimum-bridge worker`` defaults to threads):
        # Celery lets a configured worker_pool override an explicit ``--pool prefork``.
        worker_concurrency=8,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
        worker_enable_remote_control=True,
        worker_send_task_events=False,
        # How long a popped message waits in memory for Redis to come back (see consumer.py).
        bridge_unacked_record_budget_s=settings.redelivery_timeout_s,
    )
    app.steps["consumer"].add(RecordUnacked)
    return app


def _settings() -> Settings:
    try:
        settings = load_settings()
        settings.require_credentials()
    except ConfigError as exc:
        print(f"optimum-bridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


settings = _settings()
runtime.install(settings)
init_sentry(settings, component="worker")
app = create_app(settings)

_stop = threading.Event()


@worker_ready.connect
def _start_pump(**_: Any) -> None:
    rt = runtime.current()
    pump = DuePump(rt.redis, rt.keys)
    name = f"{socket.gethostname()}:{threading.get_native_id()}"
    kwargs = {"heartbeat": name, "every_2s": lambda: (rt.deliveries.recover(), rt.audit.maybe_run())}
    threading.Thread(target=pump.run_forever, args=(_stop,), kwargs=kwargs, daemon=True, name="due-pump").start()
    if settings.callback_secret is None:
        log.warning("BRIDGE_CALLBACK_SECRET is not set: callbacks cannot be signed and will be dead-lettered")
    log.info("worker ready: API %s, quota %s, prefix %r", settings.api_url, settings.rate_limit, settings.key_prefix)


@worker_shutdown.connect
def _stop_pump(**_: Any) -> None:
    _stop.set()


from . import tasks  # noqa: E402,F401  (registers the tasks on ``app``)
