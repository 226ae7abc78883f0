"""Counters shared by every process, in one Redis hash; read by ``/metrics``.

Recording never breaks the main path: a failed write is logged and dropped.
An account's calls are also counted per minute (``keys.calls_per_minute``,
one hash per hour, kept two hours) for the chart of ``/ui``. The counts of an
API call that got an answer (``call_counts``) are written by the script that
finishes or parks its job (``add_counts`` in ``lua/_prelude.lua``), in the
same round trip (issue 17).
"""

from __future__ import annotations

import logging

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.keys import CALLS_PER_MINUTE_TTL_S, Keys, text

log = logging.getLogger(__name__)

LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        """What one API call adds: (key, field, amount, ttl) quadruples, flat, as ``add_counts`` in
        ``lua/_prelude.lua`` takes them (a float amount has a decimal point; ttl '' for none)."""
        bucket = next((str(bound) for bound in LATENCY_BUCKETS if seconds <= bound), "inf")
        counts = [(self._key, name, "1", "") for name in self._names(f"calls:{status}")]
        counts.append((self._key, f"latency_bucket:{bucket}", "1", ""))  # one bucket; /metrics accumulates
        counts.append((self._key, "latency_count", "1", ""))
        counts.append((self._key, "latency_sum", f"{seconds:.6f}", ""))
        if self.account is not None:
            minute = int(self._clock.now().timestamp()) // 60
            per_minute = self._keys.calls_per_minute(self.account, minute // 60)
            counts.append((per_minute, str(minute), "1", str(CALLS_PER_MINUTE_TTL_S)))
        return tuple(value for quadruple in counts for value in quadruple)

    def observe_call(self, status: int | str, seconds: float) -> None:
        """Count one API call by status (and the account's) and add its latency to the histogram."""
        self.add(self.call_counts(status, seconds))

    def add(self, counts: tuple[str, ...]) -> None:
        """Write ``call_counts`` now, in one round trip (when no script that follows the call does)."""
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for i in range(0, len(counts) - 3, 4):
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
        """Every counter, by name."""
        raw = self._redis.hgetall(self._key)
        return {text(k): float(v) for k, v in raw.items()}
