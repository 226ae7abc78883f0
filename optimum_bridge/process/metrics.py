"""Counters shared by every process, in one Redis hash; read by ``/metrics``.

Recording never breaks the main path: a failed write is logged and dropped.
An account's calls are also counted per minute (``keys.calls_per_minute``,
one hash per hour, kept two hours) for the chart of ``/ui``. The counts of an
API call that got an answer (``call_counts``) are written by the script that
finishes or parks its job (``add_counts`` in ``lua/_prelude.lua``), in the
same round trip (issue 17).

Those counts, and the ``jobs:<state>`` the script counts, are not written to
their hashes one command each: the script pushes them as one entry on a
pending list (``keys.stats_pending``, one RPUSH), and folds the list into the
hashes when the push makes it ``FOLD_AT`` long (``fold_counts``: one HINCRBY
per distinct field). Every reader folds first, in the same step as its read
(``lua/counts_fold.lua``: ``Metrics.snapshot``, ``fold_then_read`` for a
pipeline), so none sees fewer counts than were pushed before it. A worker of
the version that wrote the hash directly may run beside one that pushes: the
fold adds to what it wrote, nothing is counted twice. A reader of that version
(an ingress not yet upgraded) reads the hash alone: it lags by what is pending
(fewer than ``FOLD_AT`` script calls) until the next fold, and loses nothing.

Fields an API call writes (issue 17: as few as can be): the account's
``acct:<account>:calls:<status>`` (``calls:<status>`` instead for a call
without an account), one ``latency_bucket:<bound>`` and ``latency_sum``.
The totals ``/metrics`` shows are derived by every reader through
``with_totals``: ``calls:<status>`` is the stored field plus every account's,
``latency_count`` the sum of the buckets.

Data of the version that wrote the totals (every account's call counted in
``calls:<status>`` too) is upgraded once, by ``Metrics.upgrade`` (``lua/
counts_upgrade.lua``) which every worker runs before it counts a call: it
takes the accounts' counts out of ``calls:<status>`` and sets
``counts_version``. Readers add the accounts' counts only when that field is
there, so data not yet upgraded reads as before and none is counted twice.
Not covered: a worker of the old version still running after the upgrade
counts its calls twice (in the total and the account's) until it stops;
upgrade by stopping the old workers first. ``latency_count`` needs no
upgrade: the old version kept it equal to the sum of the buckets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.keys import CALLS_PER_MINUTE_TTL_S, Keys, text
from optimum_bridge.lua import scripts

log = logging.getLogger(__name__)

LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Set (to 2) in the stats hash once ``calls:<status>`` no longer includes the accounts' calls.
COUNTS_VERSION = "counts_version"
#: The pending list is folded when a script's push makes it this long: it stays short without a timer,
#: and one fold (a command per distinct field) serves that many script calls.
FOLD_AT = 64


def with_totals(counters: Mapping[str, float]) -> dict[str, float]:
    """``counters`` (the stats hash) with the totals the write path leaves to readers: ``calls:<status>``
    (with every account's, once the hash is upgraded) and ``latency_count`` (the buckets' sum)."""
    totals = dict(counters)
    if COUNTS_VERSION in counters:
        for name, value in counters.items():
            account, _, counter = name.removeprefix("acct:").partition(":")
            if name.startswith("acct:") and account and counter.startswith("calls:"):
                totals[counter] = totals.get(counter, 0.0) + value
    buckets = sum(value for name, value in counters.items() if name.startswith("latency_bucket:"))
    totals["latency_count"] = max(buckets, counters.get("latency_count", 0.0))  # the old version stored it
    return totals


def fold_then_read(pipe: redis.client.Pipeline, keys: Keys, hashes: Sequence[str]) -> None:
    """Queue on ``pipe`` the fold of the pending counts and, after it in the same command, the read of
    ``hashes`` (its reply: ``hashes_read``). By EVAL, with the script's text: a pipeline cannot load a
    script the server lacks without one more round trip, and readers are few (a scrape, a page)."""
    pipe.eval(scripts.source("counts_fold"), 1 + len(hashes), keys.stats_pending, *hashes)


def hashes_read(reply: Sequence[Sequence[Any]]) -> list[dict[Any, Any]]:
    """The hashes ``lua/counts_fold.lua`` returned (each a flat HGETALL), as dicts, in order."""
    return [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in reply]


class Metrics:
    """Increment-only counters (Prometheus counters are computed from them)."""

    def __init__(
        self, client: redis.Redis, keys: Keys, *, account: str | None = None, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._redis = client
        self._keys = keys
        self._key = keys.stats
        self.account = account
        self._clock = clock

    def for_account(self, account: str) -> Metrics:
        """The same counters, also counted under ``acct:<account>:`` (the metrics' account label)."""
        return Metrics(self._redis, self._keys, account=account, clock=self._clock)

    def upgrade(self) -> bool:
        """Upgrade the stats hash to the counts this version writes, once (see the module's docstring);
        True when this call did it. Run before counting a call: a ``redis.RedisError`` is raised, since
        calls counted before the upgrade would be taken out of the totals."""
        done = scripts.register(self._redis, "counts_upgrade")(keys=[self._key], args=[COUNTS_VERSION])
        if done:
            log.info("metrics: the stats hash is upgraded (accounts' calls no longer in calls:<status>)")
        return bool(done)

    def _names(self, name: str) -> list[str]:
        return [name] if self.account is None else [name, f"acct:{self.account}:{name}"]

    def incr(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name`` (and to the account's)."""
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for key in self._names(name):
                    pipe.hincrby(self._key, key, amount)
                pipe.execute()
        except redis.RedisError:
            log.warning("could not record metric %s", name, exc_info=True)

    def call_counts(self, status: int | str, seconds: float) -> tuple[str, ...]:
        """What one API call adds, as ``add_counts`` in ``lua/_prelude.lua`` takes them: the pending
        list and its bound (``FOLD_AT``), then (key, field, amount, ttl) quadruples, flat (a float amount
        has a decimal point; ttl '' for none; no key or field has a space)."""
        bucket = next((str(bound) for bound in LATENCY_BUCKETS if seconds <= bound), "inf")
        # The totals (calls:<status> with an account, latency_count) are left to readers: with_totals.
        calls = f"calls:{status}" if self.account is None else f"acct:{self.account}:calls:{status}"
        counts = [(self._key, calls, "1", "")]
        counts.append((self._key, f"latency_bucket:{bucket}", "1", ""))  # one bucket; /metrics accumulates
        counts.append((self._key, "latency_sum", f"{seconds:.6f}", ""))
        if self.account is not None:
            minute = int(self._clock.now().timestamp()) // 60
            per_minute = self._keys.calls_per_minute(self.account, minute // 60)
            counts.append((per_minute, str(minute), "1", str(CALLS_PER_MINUTE_TTL_S)))
        return (self._keys.stats_pending, str(FOLD_AT), *(value for quadruple in counts for value in quadruple))

    def observe_call(self, status: int | str, seconds: float) -> None:
        """Count one API call by status (and the account's) and add its latency to the histogram."""
        self.add(self.call_counts(status, seconds))

    def add(self, counts: tuple[str, ...]) -> None:
        """Write ``call_counts`` now, in one round trip (when no script that follows the call does)."""
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for i in range(2, len(counts) - 3, 4):  # after the pending list and its bound
                    key, field, amount, ttl = counts[i : i + 4]
                    if "." in amount:
                        pipe.hincrbyfloat(key, field, float(amount))
                    else:
                        pipe.hincrby(key, field, int(amount))
                    if ttl:
                        pipe.expire(key, int(ttl))
                pipe.execute()
        except redis.RedisError:
            log.warning("could not record call metrics", exc_info=True)

    def snapshot(self) -> dict[str, float]:
        """Every counter, by name, with the totals (``with_totals``): the pending counts folded first."""
        reply = scripts.register(self._redis, "counts_fold")(keys=[self._keys.stats_pending, self._key])
        (raw,) = hashes_read(reply)
        return with_totals({text(k): float(v) for k, v in raw.items()})
