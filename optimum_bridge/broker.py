"""What the bridge assumes about kombu's and Celery's internals, in one place.

The versions these assumptions were checked against are pinned in
``pyproject.toml``; ``tests/test_broker_contract.py`` fails on an upgrade that
changes them.
"""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from .keys import CALLBACKS_QUEUE, OPERATIONS_QUEUE


def task_queues() -> tuple[Any, ...]:
    """The queues a worker consumes when no ``-Q`` is given: operations and callbacks."""
    return tuple(
        Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
        for name in (OPERATIONS_QUEUE, CALLBACKS_QUEUE)
    )
