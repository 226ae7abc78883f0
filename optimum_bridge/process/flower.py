"""The Celery app Flower watches: ``celery -A optimum_bridge.process.flower flower``.

Only the broker side of ``optimum_bridge.worker``: the bridge's Redis, key
prefix and queues. Importing it asks for no Optimum credentials and no callback
secret, so the Flower container is never given them. A bad setting stops it
with one line, as the worker does.
"""

from __future__ import annotations

import sys

from celery import Celery

from optimum_bridge.errors import ConfigError
from optimum_bridge.process.kombu_worker import broker_url, task_queues, transport_options
from optimum_bridge.settings import Settings, load_settings


def create_monitor_app(settings: Settings) -> Celery:
    """A Celery app that reads the bridge's broker (for Flower); it runs no task."""
    app = Celery("optimum_bridge", set_as_current=True)
    app.conf.update(
        broker_url=broker_url(settings),
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_queues=task_queues(),
        task_serializer="json",
        accept_content=["json"],
    )
    return app


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"optimum-bridge: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


app = create_monitor_app(_settings())
