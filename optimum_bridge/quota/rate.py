"""An account's quota as numbers: ``RateLimit`` (``30/m`` as configured) and ``Quota`` (its arithmetic).

A leaf: settings, the accounts file, the limiter and forecasts all read these,
and this module reads none of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator

_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_WINDOWS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` calls in any ``window_s`` seconds."""

    limit: int
    window_s: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``N/s``, ``N/m`` or ``N/h``."""
        match = _RATE.match(text)
        if match is None or int(match.group(1)) < 1:
            raise ValueError(f"expected N/s, N/m or N/h with N >= 1, got {text!r}")
        return cls(int(match.group(1)), _WINDOWS[match.group(2)])

    def __str__(self) -> str:
        unit = {1.0: "s", 60.0: "m", 3600.0: "h"}.get(self.window_s)
        return f"{self.limit}/{unit}" if unit else f"{self.limit}/{self.window_s}s"


@dataclass(frozen=True)
class Quota:
    """The arithmetic of one account's quota, in milliseconds."""

    limit: int
    window_ms: int  # the quota's window plus the safety margin
    interval_ms: int  # the pacer: one slot every window / limit
    burst_ms: int  # the pacer's burst credit: (burst - 1) intervals

    @classmethod
    def of(cls, rate: RateLimit, *, margin_s: float, burst: int = 1) -> Quota:
        """The quota for ``rate`` with ``margin_s`` added to its window and ``burst`` calls at once."""
        window_ms = round((rate.window_s + margin_s) * 1000)
        interval_ms = max(1, -(-window_ms // rate.limit))  # rounded up: never faster than the quota
        return cls(rate.limit, window_ms, interval_ms, (max(1, min(burst, rate.limit)) - 1) * interval_ms)

    @property
    def interval_s(self) -> float:
        """Seconds between two slots under a backlog."""
        return self.interval_ms / 1000

    def args(self) -> list[int]:
        """The quota as the scripts take it: limit, window, interval, burst credit."""
        return [self.limit, self.window_ms, self.interval_ms, self.burst_ms]


def _parse(value: object) -> object:
    """Text as a ``RateLimit``; anything else is left for pydantic to check."""
    return RateLimit.parse(value) if isinstance(value, str) else value


#: A rate limit field of a pydantic model (settings, the accounts file): ``30/m`` parsed in one place.
RateLimitField = Annotated[RateLimit, BeforeValidator(_parse)]
