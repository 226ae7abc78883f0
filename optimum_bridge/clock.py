"""The one clock of the bridge.

Wall-clock time (``now``) stamps job records and callbacks; ``monotonic`` and
``sleep`` drive waits. Tests replace the clock instead of sleeping. Decisions
shared between processes (rate limit, due retries) use the Redis server's
clock instead, so hosts with skewed clocks agree.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms_ceil(moment: datetime) -> int:
    """Epoch milliseconds, rounded up (in integers: no float error): what the Redis clock, rounded down, must reach."""
    return -(-((moment - _EPOCH) // timedelta(microseconds=1)) // 1000)


class Clock:
    """System time, behind methods a test can override."""

    def now(self) -> datetime:
        """The current UTC time, timezone-aware."""
        return datetime.now(UTC)

    def time(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (no-op when not positive)."""
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = Clock()


def isoformat(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` and second precision, as the callbacks carry."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
