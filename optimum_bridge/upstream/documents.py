"""Each account's OpenAPI document in Redis, where the workers' upkeep puts it and producers read it.

A producer caches the checker per process behind a short check of the document's
version. openapi-core (about a third of a producer's import time) is loaded only
when the first operation is checked: ``upstream.openapi`` is imported then.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.keys import Keys
from optimum_bridge.steps import Blocking, Command, Steps, SyncDriver

if TYPE_CHECKING:
    from optimum_bridge.upstream.openapi import OperationChecker

log = logging.getLogger(__name__)

#: How long a producer trusts its in-memory copy before checking the version key again.
RECHECK_S = 5.0


class DocumentCache:
    """Each account's checker, cached per process behind a short check of the version (as steps)."""

    def __init__(self, keys: Keys, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._keys = keys
        self._clock = clock
        self._cache: dict[str, tuple[str, OperationChecker, float]] = {}
        self._unreadable: set[tuple[str, str]] = set()

    def checker(self, account: str) -> Steps[OperationChecker | None]:
        """The account's checker, None when no document was stored."""
        now = self._clock.monotonic()
        cached = self._cache.get(account)
        if cached is not None and now - cached[2] < RECHECK_S:
            return cached[1]
        version = yield Command("GET", (self._keys.openapi_version(account),))
        if version is None:
            self._cache.pop(account, None)
            return None
        tag = version.decode() if isinstance(version, bytes) else str(version)
        if cached is not None and cached[0] == tag:
            self._cache[account] = (tag, cached[1], now)
            return cached[1]
        checker = yield from self._load(account, tag)
        if checker is None:
            return None
        self._cache[account] = (tag, checker, now)
        return checker

    def _load(self, account: str, tag: str) -> Steps[OperationChecker | None]:
        """A checker of the stored document (None: none stored, or one openapi-core cannot read)."""
        text = yield Command("GET", (self._keys.openapi(account),))
        if text is None or (account, tag) in self._unreadable:
            return None
        from optimum_bridge.upstream.openapi import OperationChecker  # noqa: PLC0415 - openapi-core loads at the first check

        document = json.loads(text)
        try:  # building it takes a while: the asyncio client does it in a thread
            checker: OperationChecker = yield Blocking(lambda: OperationChecker(document))
        except Exception:  # a document openapi-core cannot read checks nothing: queue unchecked
            log.warning("the OpenAPI document of account %s cannot be read; operations go unchecked", account)
            self._unreadable.add((account, tag))
            return None
        return checker


class DocumentStore:
    """Each account's document in Redis (one key, and a version key), cached per process."""

    def __init__(self, client: redis.Redis, keys: Keys, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._redis = client
        self._keys = keys
        self.cache = DocumentCache(keys, clock=clock)
        self._run = SyncDriver(client)

    def put(self, account: str, document: dict[str, Any]) -> None:
        """Store an account's document (a new version for every producer)."""
        text = json.dumps(document, sort_keys=True)
        with self._redis.pipeline() as pipe:
            pipe.set(self._keys.openapi(account), text)
            pipe.incr(self._keys.openapi_version(account))
            pipe.execute()

    def checker(self, account: str) -> OperationChecker | None:
        """The account's checker, None when no document was stored."""
        return self._run(self.cache.checker(account))
