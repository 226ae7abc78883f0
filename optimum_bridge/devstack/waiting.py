"""Waiting for a condition with a deadline, instead of sleeping a fixed time.

``wait_until`` polls a predicate (a job state in Redis, a line in a log);
``wait_on`` waits on a ``threading.Condition`` that the producer of the event
notifies (the callback receiver), so it wakes as soon as the event happens.
Both raise ``WaitTimeout`` naming what they waited for. Real time on purpose:
the harness waits for other processes, which the bridge's clock does not drive.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A condition did not become true in time; the message says which."""


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Poll ``predicate`` every ``interval`` s until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def wait_on(cond: threading.Condition, predicate: Callable[[], T], *, timeout: float, what: str = "condition") -> T:
    """Wait on ``cond`` until ``predicate`` (called with ``cond`` held) returns something truthy."""
    with cond:
        value = cond.wait_for(predicate, timeout)
    if not value:
        raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
    return value
