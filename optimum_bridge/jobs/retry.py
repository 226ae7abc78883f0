"""Retry policy as pure functions: what an answer means, and how long to wait.

No Redis, no Celery, no clock: everything here is decided from its arguments,
so the whole policy is tested in microseconds.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

RETRYABLE_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})

Verdict = Literal["succeeded", "retry", "failed"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * factor**(n-1)``, capped, +-``jitter``."""

    base_s: float = 5.0
    factor: float = 3.0
    cap_s: float = 7200.0
    jitter: float = 0.25

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raw = min(self.cap_s, self.base_s * self.factor ** max(0, attempt - 1))
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, raw * (1 + spread))


def classify_status(status: int) -> Verdict:
    """2xx succeeds; 429/500/502/503/504 is retried; every other status is final."""
    if 200 <= status < 300:
        return "succeeded"
    if status in RETRYABLE_STATUSES:
        return "retry"
    return "failed"


def retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta or HTTP date), if valid."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def should_retry(*, attempts: int, max_attempts: int, elapsed_s: float, delay_s: float, budget_s: float) -> bool:
    """Whether another attempt fits in the attempt and duration budgets."""
    return attempts < max_attempts and elapsed_s + delay_s <= budget_s
