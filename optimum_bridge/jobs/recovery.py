"""Nothing lost: the jobs whose hand-off or whose worker was lost go back to their lane.

A dispatched job has a hand-off deadline: if no worker takes its message by
then (the message was lost), ``lua/recover.lua`` puts it back in its lane with
its age. A running job holds a short lease (``jobs.leases``), renewed while its
attempt runs; if its worker dies (SIGKILL, OOM), the lease runs out and the job
goes back to its lane (so do the jobs of a previous version's worker, whose
leases were keys of their own: ``Keys.running``), and its account is due at once in the ready set
(``quota.dispatcher``). Every worker's upkeep runs this; the script makes them
safe together. Callbacks have their own recovery (``callbacks.deliveries``).
"""

from __future__ import annotations

import logging

import redis

from optimum_bridge.keys import Keys, text
from optimum_bridge.lua import scripts

log = logging.getLogger(__name__)


class Recovery:
    """Puts back in their lane the jobs whose hand-off or whose worker was lost."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys
        self._recover = scripts.register(client, "recover")

    def run(self) -> list[tuple[str, str]]:
        """Recover what is overdue; returns ``(job id, why)`` for each job put back."""
        k = self._keys
        if not self._redis.exists(k.dispatched, k.leases, k.running):  # idle: one command, no script
            return []
        keys = [k.dispatched, k.leases, k.ready, k.wake, k.running]
        args: list[str | int] = [self._keys.job_prefix, self._keys.lease_prefix, self._keys.lane_prefix, 500]
        raw = self._recover(keys=keys, args=args)
        back = [(text(raw[i]), text(raw[i + 1])) for i in range(0, len(raw), 2)]
        for job_id, why in back:
            if why == "handoff":
                log.warning("job %s: its message was not taken by a worker in time; back in its lane", job_id)
            else:
                log.warning("job %s: its worker stopped renewing the lease (died?); back in its lane", job_id)
        return back
