"""The upkeep's ``openapi`` timer: each account's OpenAPI document fetched into Redis when due.

``DocumentFetchers`` looks at ``keys.openapi_due`` (one command a tick, whatever the number of
accounts) and hands each due account to its ``DocumentFetcher``, which fetches in a thread of its
own (``upstream.openapi``) and stores the document for producers' checks (``upstream.documents``).
Run by ``process.upkeep``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import httpx

from optimum_bridge.errors import BridgeError, ConfigError
from optimum_bridge.keys import text
from optimum_bridge.upstream.documents import DocumentStore
from optimum_bridge.upstream.openapi import fetch_document

if TYPE_CHECKING:
    from optimum_bridge.process.runtime import Runtime

log = logging.getLogger(__name__)

#: How often the API's OpenAPI document is fetched again, and again after a failure.
DOCUMENT_EVERY_S = 86400.0
DOCUMENT_RETRY_S = 3600.0
#: How often a worker looks for due documents, and how many it takes at a time.
DOCUMENT_TICK_S = 5.0
DOCUMENTS_PER_TICK = 10


class DocumentFetchers:
    """Fetches the OpenAPI documents that are due (``keys.openapi_due``), each by a ``DocumentFetcher``."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._store = DocumentStore(rt.redis, rt.keys)
        self._fetchers: dict[str, DocumentFetcher] = {}

    def run(self) -> None:
        """Start a fetch of each due document this worker's accounts file names (one command when none is due)."""
        rt = self._rt
        due = rt.redis.zrangebyscore(rt.keys.openapi_due, "-inf", time.time(), start=0, num=DOCUMENTS_PER_TICK)
        for name in (text(raw) for raw in due if isinstance(raw, bytes | str)):  # members, without scores
            if name not in rt.registry:  # not ours: a worker that knows it will fetch it
                rt.redis.zadd(rt.keys.openapi_due, {name: time.time() + DOCUMENT_RETRY_S})
                continue
            if name not in self._fetchers:
                self._fetchers[name] = DocumentFetcher(rt, self._store, name)
            self._fetchers[name].run()


class DocumentFetcher:
    """Fetches one account's OpenAPI document into Redis, once a day for every worker sharing the Redis.

    ``run`` (when the document is due) never waits on the network: the fetch runs in a thread of its
    own, so a slow document cannot delay heartbeats. A claim key with a day's TTL (an hour after a
    failure) says a fetch is fresh, so one worker fetches and the others skip; the fetch, or a skip,
    sets when the document is due next.
    """

    def __init__(self, rt: Runtime, store: DocumentStore, account: str) -> None:
        self._rt = rt
        self._store = store
        self.account = account
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Start a fetch in the background when none is fresh (claimed) and none is running here."""
        if self._thread is not None and self._thread.is_alive():
            return
        claim = self._rt.keys.openapi_claim(self.account)
        if not self._rt.redis.set(claim, os.getpid(), nx=True, ex=int(DOCUMENT_EVERY_S)):
            fresh_s = max(60, int(self._rt.redis.ttl(claim)))  # fetched (or being fetched) by another
            self._rt.redis.zadd(self._rt.keys.openapi_due, {self.account: time.time() + fresh_s})
            return
        self._thread = threading.Thread(target=self._fetch_claimed, name=f"openapi-{self.account}", daemon=True)
        self._thread.start()

    def _fetch_claimed(self) -> None:
        try:
            wait_s = self.fetch_now()
            if wait_s != DOCUMENT_EVERY_S:
                self._rt.redis.expire(self._rt.keys.openapi_claim(self.account), int(wait_s))
        except Exception:  # a thread of its own: log, never die silently
            log.exception("openapi %s: fetch failed", self.account)

    def fetch_now(self) -> float:
        """Fetch and store the document now; the seconds until the next fetch is due (set in Redis too)."""
        wait_s = self._fetch()
        self._rt.redis.zadd(self._rt.keys.openapi_due, {self.account: time.time() + wait_s})
        return wait_s

    def _fetch(self) -> float:
        account = self._rt.registry.get(self.account)
        if account is None:  # removed since
            return DOCUMENT_EVERY_S
        try:
            tokens = self._rt.accounts[self.account].tokens
        except ConfigError:
            tokens = None
        try:
            document = fetch_document(self._rt.api_http, account.document_url, api_url=account.api_url, tokens=tokens)
        except (httpx.HTTPError, ValueError, BridgeError) as exc:
            log.warning(
                "openapi %s: no document from %s (%s); retrying in 1 h", self.account, account.document_url, exc
            )
            return DOCUMENT_RETRY_S
        self._store.put(self.account, document)
        log.info("openapi %s: document stored (%d paths)", self.account, len(document["paths"]))
        return DOCUMENT_EVERY_S

    def join(self, timeout_s: float) -> None:
        """Wait for a background fetch (tests)."""
        if self._thread is not None:
            self._thread.join(timeout_s)
