"""A flag that processes forked after it was made share: one byte of anonymous shared memory.

The worker's warm shutdown begins in its main process (``worker_shutting_down``), but with
``--pool prefork`` the jobs run in its children, each with a runtime of its own (``runtime.current``
rebuilds it after the fork). A ``threading.Event`` set in the main process would never reach them,
and a child's threads would go on taking jobs (``Executor``'s chain) for up to ``chain_s`` while the
worker waits for them to finish. The runtime made before the pool forks holds this flag instead, and
every runtime rebuilt in a child keeps it, so setting it in the main process stops every thread of
every child from taking a next job. Reads and writes of one byte need no lock.
"""

from __future__ import annotations

import mmap
from typing import Protocol


class Flag(Protocol):
    """What a reader of the flag needs (``threading.Event`` is one too)."""

    def is_set(self) -> bool: ...


class SharedFlag:
    """Set once, seen by this process, its threads, and every process forked from it after it was made."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, 1)  # anonymous and MAP_SHARED: a fork maps the same page

    def set(self) -> None:
        self._page[0] = 1

    def is_set(self) -> bool:
        return self._page[0] == 1

    def __repr__(self) -> str:
        return f"SharedFlag(set={self.is_set()})"
