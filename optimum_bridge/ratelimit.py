"""The global rate limiter: at most N calls start in any window, across every process.

Algorithm: a sliding log of *reservations* in one Redis sorted set, updated by
one Lua script on the Redis server's clock. A caller asks for a slot; the
script appends the earliest start time ``t`` such that the log never holds
more than N entries within any window:

    t = max(now, pause_until, last entry, (N-th most recent entry) + window)

and the caller sleeps until ``t``. Entries are appended in order, so checking
the N-th most recent one is enough to keep *every* window of the quota's
length at N or fewer starts -- the property the API's rolling-minute counter
checks, which token-bucket and GCRA limiters with a burst allowance break.
Callers are served first come, first served, never poll each other, and
wait exactly as long as the quota requires. ``window`` includes a small safety
margin because a call reaches the API a little after its slot starts.

A 429 from the API calls ``pause``: no slot starts before ``Retry-After`` (or
the window) has passed, in any process.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import redis

from . import scripts
from .clock import SYSTEM_CLOCK, Clock
from .keys import Keys
from .settings import RateLimit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    """A reserved start: ``granted`` false means no slot within ``max_wait``."""

    granted: bool
    wait_s: float
    member: str


class RateLimiter:
    """One quota shared by every process using the same Redis and prefix."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        rate: RateLimit,
        *,
        margin_s: float = 0.25,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._redis = client
        self._keys = keys
        self.rate = rate
        self.window_ms = round((rate.window_s + margin_s) * 1000)
        self._clock = clock
        self._reserve = scripts.register(client, "limiter_reserve")
        self._pause = scripts.register(client, "limiter_pause")
        self._paused_for = scripts.register(client, "limiter_paused_for")

    def reserve(self, *, max_wait_s: float) -> Slot:
        """Reserve the earliest slot, unless it is more than ``max_wait_s`` away."""
        member = uuid.uuid4().hex
        keys = [self._keys.limiter_log, self._keys.limiter_pause]
        args: list[str | int] = [self.rate.limit, self.window_ms, int(max_wait_s * 1000), member]
        granted, wait_ms = self._reserve(keys=keys, args=args)
        return Slot(bool(granted), int(wait_ms) / 1000, member)

    def cancel(self, slot: Slot) -> None:
        """Give back a reserved slot that will not be used."""
        self._redis.zrem(self._keys.limiter_log, slot.member)

    def acquire(self, *, max_wait_s: float) -> float | None:
        """Block until a call may start; ``None`` (and no slot) if that is too far off.

        Returns the seconds waited. A 429 seen by another process while we
        sleep moves us behind the pause.
        """
        waited = 0.0
        while True:
            slot = self.reserve(max_wait_s=max(0.0, max_wait_s - waited))
            if not slot.granted:
                return None
            if slot.wait_s <= 0:
                return waited  # the script already checked the pause: nothing can have changed
            self._clock.sleep(slot.wait_s)
            waited += slot.wait_s
            if self.paused_for() <= 0:
                return waited
            self.cancel(slot)

    def pause(self, seconds: float) -> float:
        """Stop every process from starting calls for ``seconds`` (extends only)."""
        ms = max(1, int(seconds * 1000))
        remaining = int(self._pause(keys=[self._keys.limiter_pause], args=[ms]))
        log.warning("rate limiter paused for %.1fs after a 429", remaining / 1000)
        return remaining / 1000

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when none)."""
        return int(self._paused_for(keys=[self._keys.limiter_pause])) / 1000
