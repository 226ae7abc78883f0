"""The Celery app: ``celery -A optimum_bridge.worker worker`` (or ``optimum-bridge worker``).

Importing this module reads the settings (a bad one stops the process with
one line) and builds the app; nothing starts until a worker does. A worker
then consumes both queues (operations and callbacks) unless ``-Q`` narrows
it, initialises Sentry before its pool forks (``WorkerStart``), and runs the
upkeep loop (``process.upkeep.UpkeepStep``) for as long as it lives.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, bootsteps, signals

from optimum_bridge.config.checks import require_schedules, require_secrets_key, require_simulator
from optimum_bridge.errors import ConfigError
from optimum_bridge.keys import CALLBACKS_QUEUE, DELIVER_TASK, EXECUTE_TASK, OPERATIONS_QUEUE
from optimum_bridge.process import runtime
from optimum_bridge.process.kombu_worker import (
    broker_url,
    consumer_class,
    record_unacked_step,
    task_queues,
    transport_options,
    watch_consumer_step,
)
from optimum_bridge.process.observability import init_sentry, require_sentry
from optimum_bridge.process.redis import check_eviction_policy
from optimum_bridge.process.upkeep import UpkeepStep
from optimum_bridge.settings import Settings, load_settings

log = logging.getLogger(__name__)


class WorkerStart(bootsteps.Step):  # type: ignore[misc]  # celery ships no types
    """Runs as the worker is assembled, before its pool forks: Sentry, and what the worker will do."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        settings = runtime.current().settings
        init_sentry(settings, component="worker")
        if settings.callback_secret is None:
            log.warning("BRIDGE_CALLBACK_SECRET is not set: callbacks cannot be signed and will be dead-lettered")
        for account in settings.accounts.by_name.values():
            log.info("worker: account %s: API %s, quota %s", account.name, account.api_url, account.rate_limit)
        created = len(runtime.current().registry.all()) - len(settings.accounts.by_name)
        if created:
            log.info("worker: %d account(s) created at runtime (BRIDGE_SECRETS_KEY)", created)
        log.info("worker: key prefix %r", settings.key_prefix)
        check_eviction_policy(runtime.current().redis)


def create_app(settings: Settings) -> Celery:
    """A Celery app bound to the bridge's Redis, queues and delivery guarantees."""
    app = Celery("optimum_bridge", set_as_current=True, include=["optimum_bridge.tasks"])
    app.conf.update(
        broker_url=broker_url(settings),
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_consumer=consumer_class(),
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
        # How long a popped message waits in memory for Redis to come back (kombu_worker.record_unacked_step).
        bridge_unacked_record_budget_s=settings.redelivery_timeout_s,
    )
    app.steps["worker"].add(WorkerStart)
    app.steps["worker"].add(UpkeepStep)
    app.steps["consumer"].add(record_unacked_step())
    app.steps["consumer"].add(watch_consumer_step())
    return app


@signals.worker_shutting_down.connect
def _drain(**_: Any) -> None:
    """A warm shutdown waits for the tasks under way: their threads stop taking further jobs."""
    runtime.current().draining.set()


def _settings() -> Settings:
    try:
        settings = load_settings()
        for account in settings.accounts.by_name.values():
            account.require_credentials()
        require_simulator(settings)
        require_schedules(settings)
        require_sentry(settings)
        require_secrets_key(settings)
    except ConfigError as exc:
        print(f"optimum-bridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return settings


runtime.install(_settings())  # lazy: no connection is opened until a task or the upkeep needs one
app = create_app(runtime.current().settings)
