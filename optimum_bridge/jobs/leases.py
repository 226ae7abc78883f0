"""Short job leases, kept alive from one background thread per process.

A lease says "this worker is executing the job right now": the job's entry in
``Keys.leases`` (a sorted set: job id -> deadline, Redis clock) and its
``owner`` field. Taking one is a step of the scripts that start a job
(``lua/claim.lua``, ``take_job`` in ``lua/_serve.lua``); finishing the job
removes it, and so does parking it, by its owner only (a worker whose lease
was taken back leaves the job to its new holder). It is short (a few
seconds) so that after a crash the job is free again soon (``jobs.recovery``
takes back the jobs whose deadline is past), and renewed every third of its lifetime while the attempt runs --
however long the rate limiter or the API makes it wait. Renewal checks the
owner and the deadline: a lease that another worker took over, that recovery
took back, or that ran out, is never extended by the old owner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from optimum_bridge.keys import Keys
from optimum_bridge.lua import scripts

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Keeps the leases of the jobs registered with ``hold`` alive until released."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl_ms: int) -> None:
        self.ttl_ms = ttl_ms
        self._keys = keys
        self._renew = scripts.register(client, "leases_renew")
        self._held: dict[str, str] = {}  # job id -> owner
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, job_id: str, owner: str) -> Iterator[None]:
        """Renew job ``job_id``'s lease (held by ``owner``) for the duration of the block."""
        with self._lock:
            self._held[job_id] = owner
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(job_id, None)

    def renew_once(self) -> int:
        """Extend every held lease still owned by us; returns how many were."""
        with self._lock:
            held = list(self._held.items())
        if not held:
            return 0
        keys = [self._keys.leases, *(self._keys.job(job_id) for job_id, _ in held)]
        args: list[str | int] = [self.ttl_ms]
        for job_id, owner in held:
            args += [job_id, owner]
        return int(self._renew(keys=keys, args=args))

    def _run(self) -> None:
        while not self._wake.wait(self.ttl_ms / 3000):
            try:
                self.renew_once()
            except redis.RedisError as exc:
                log.warning("lease renewal failed (%s); will retry", type(exc).__name__)
