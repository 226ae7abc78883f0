"""The quota of one account, shared by every process: when a call may start, and the 429 pause.

Two rules, both on the Redis server's clock (``lua/_limiter.lua``):

- **a sliding log of starts**: a call may start only while fewer than N calls
  started in the last window (the quota's length plus a small margin, since a
  call reaches the API a little after its slot). Every window of the quota's
  length therefore holds at most N starts -- the rolling-minute rule the API
  checks, which a token bucket or GCRA alone would break;
- **a pacer** (GCRA): slots come one every window ÷ N, so under a backlog a
  newcomer meets a slot within one interval instead of waiting for the window
  to turn over. ``BRIDGE_RATE_BURST`` (default 1: none) lets that many calls
  start at once after the API has been idle, at the cost of a gap later when
  a backlog keeps coming (see the README).

Slots are not reserved ahead: ``scheduler.Dispatcher`` gives one to the best
waiting job at the moment the call may start. ``take_slot`` serves the one
case where a running job needs a second slot (its call is re-sent after a
401). A 429 calls ``pause``: no slot starts before ``Retry-After`` (or the
window) has passed, in any process.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import redis

from . import scripts
from .clock import SYSTEM_CLOCK, Clock
from .keys import DEFAULT_ACCOUNT, Keys
from .settings import RateLimit

log = logging.getLogger(__name__)


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


class RateLimiter:
    """One account's quota as stored in Redis: its log, pacer and pause."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        rate: RateLimit,
        *,
        margin_s: float = 0.25,
        burst: int = 1,
        account: str = DEFAULT_ACCOUNT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = client
        self.rate = rate
        self.account = account
        self.quota = Quota.of(rate, margin_s=margin_s, burst=burst)
        self.log_key = keys.limiter_log(account)
        self.pause_key = keys.limiter_pause(account)
        self.tat_key = keys.limiter_tat(account)
        self._clock = clock
        self._take = scripts.register(client, "take_slot")
        self._pause = scripts.register(client, "limiter_pause")
        self._paused_for = scripts.register(client, "limiter_paused_for")

    @property
    def window_ms(self) -> int:
        """The window the log is kept over (margin included)."""
        return self.quota.window_ms

    def take_slot(self) -> float:
        """Take a slot now if one is free; else the seconds until one may be (nothing taken)."""
        member = f"take.{uuid.uuid4().hex}"
        keys = [self.log_key, self.pause_key, self.tat_key]
        return int(self._take(keys=keys, args=[*self.quota.args(), member])) / 1000

    def wait_for_slot(self, *, max_wait_s: float) -> bool:
        """Block until a slot is taken (True), or give up after ``max_wait_s`` (False). Holds no slot while waiting."""
        deadline = self._clock.monotonic() + max_wait_s
        while True:
            wait = self.take_slot()
            if wait <= 0:
                return True
            if self._clock.monotonic() + wait > deadline:
                return False
            self._clock.sleep(wait)

    def pause(self, seconds: float) -> float:
        """Stop every process from starting this account's calls for ``seconds`` (extends only)."""
        ms = max(1, int(seconds * 1000))
        remaining = int(self._pause(keys=[self.pause_key], args=[ms]))
        log.warning("account %s: rate limiter paused for %.1fs after a 429", self.account, remaining / 1000)
        return remaining / 1000

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when none)."""
        return int(self._paused_for(keys=[self.pause_key])) / 1000

    def starts(self) -> list[int]:
        """Start times (ms, Redis clock) of the calls in the current window, oldest first."""
        entries = self._redis.zrange(self.log_key, 0, -1, withscores=True)
        return [int(entry[1]) for entry in entries]
