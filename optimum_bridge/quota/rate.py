"""An account's quota as numbers: ``RateLimit`` (``30/m`` as configured) and ``Quota`` (its arithmetic).

A leaf: settings, the accounts file, the limiter and forecasts all read these,
and this module reads none of them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator

_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_WINDOWS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: The default margin: this share of the quota's window, at most ``MAX_DEFAULT_MARGIN_S`` seconds.
MARGIN_SHARE = 0.05
MAX_DEFAULT_MARGIN_S = 0.25


def default_margin_s(window_s: float) -> float:
    """The margin added to a quota's window when none is configured: proportionate to the window.

    A call reaches the API a little after its slot, by milliseconds that do not grow with the
    window: 5 % of it, at most 0.25 s, keeps a per-second quota at 0.95 of its limit (a fixed
    0.25 s held 10/s to 0.80) and 30/m at 99.6 % (spec §10a).
    """
    return min(MAX_DEFAULT_MARGIN_S, window_s * MARGIN_SHARE)


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


#: How late a slot may be taken (the scripts' clock counts whole milliseconds; a dispatcher's timed
#: wait and a message's hand-off take a few): a quota whose interval is shorter gets as much burst
#: credit, so the lateness is made up, not lost. The quota's log still holds every window to its limit.
PACER_SLACK_MS = 10

#: The field of an account's limiter state (``Keys.limiter_state``) that holds its quota as ``Quota.stored``:
#: a copy of its entry in ``Keys.quotas``, read with the rest of the state in one ``HMGET`` (``lua/_serve.lua``).
STATE_FIELD = "quota"


@dataclass(frozen=True)
class Quota:
    """The arithmetic of one account's quota, in milliseconds."""

    limit: int
    window_ms: int  # the quota's window plus the safety margin
    interval_ms: float  # the pacer: one slot every window / limit (under 1 ms above 1,000 a second)
    burst_ms: float  # the pacer's burst credit: (burst - 1) intervals

    @classmethod
    def of(cls, rate: RateLimit, *, margin_s: float | None = None, burst: int = 1) -> Quota:
        """The quota for ``rate`` with ``margin_s`` (None: ``default_margin_s``) added to its window
        and ``burst`` calls at once: at least ``PACER_SLACK_MS``'s share of the quota, since the scripts'
        clock counts whole milliseconds and a dispatcher's wait ends a little late; with less credit a
        fast quota would lose that much of every slot (as 200/s did: 161 calls a second)."""
        margin = default_margin_s(rate.window_s) if margin_s is None else margin_s
        window_ms = round((rate.window_s + margin) * 1000)
        interval_ms = window_ms / rate.limit
        burst = max(burst, math.ceil(PACER_SLACK_MS / interval_ms))
        return cls(rate.limit, window_ms, interval_ms, (min(burst, rate.limit) - 1) * interval_ms)

    @property
    def interval_s(self) -> float:
        """Seconds between two slots under a backlog."""
        return self.interval_ms / 1000

    def args(self) -> list[int | float]:
        """The quota as the scripts take it: limit, window, interval, burst credit."""
        return [self.limit, self.window_ms, self.interval_ms, self.burst_ms]

    def stored(self) -> str:
        """``args()`` joined by spaces: the quota as the workers store it for the scripts."""
        return " ".join(str(v) for v in self.args())

    @classmethod
    def of_args(cls, stored: str) -> Quota:
        """A quota from ``args()`` joined by spaces (as the workers store it for the dispatch)."""
        limit, window_ms, interval_ms, burst_ms = stored.split()
        return cls(int(limit), int(window_ms), float(interval_ms), float(burst_ms))


def _parse(value: object) -> object:
    """Text as a ``RateLimit``; anything else is left for pydantic to check."""
    return RateLimit.parse(value) if isinstance(value, str) else value


#: A rate limit field of a pydantic model (settings, the accounts file): ``30/m`` parsed in one place.
RateLimitField = Annotated[RateLimit, BeforeValidator(_parse)]
