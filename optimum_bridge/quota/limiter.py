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

Slots are not reserved ahead: ``quota.dispatcher.Dispatcher`` gives one to the best
waiting job at the moment the call may start. ``take_slot`` serves the one
case where a running job needs a second slot (its call is re-sent after a
401). A 429 calls ``pause``: no slot starts before ``Retry-After`` (or the
window) has passed, in any process.

Everything of an account's limiter but its log -- the pause, the pacer, the
learned limits, its quota and when its delayed set is next due -- is one hash,
its limiter state (``Keys.limiter_state``), which the scripts read in one
``HMGET``. The pause and the learned limits are also written where the previous
version reads them (``pause_key``, ``learned_key``), for a rolling upgrade.

**The quota as the API states it** (spec §13). The limit in force is
min(configured, learned), read inside the scripts from the account's limiter
state, so every process and the dispatcher follow a lesson at once:

- ``observe`` records what an answer's rate-limit headers state
  (``quota.headers``): a limit, capped to [1, configured] and normalised to the
  configured window, trusted for two windows unless restated; and the calls
  remaining until a reset: when the API counted calls the log does not know,
  no call starts once they are used up, before the reset (no call wasted on
  a certain 429);
- ``learn_from_429`` handles a 429 no header explains: AIMD, with the decrease
  to what the API evidently allowed and a slow additive recovery
  (``lua/limiter_429.lua``).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace

import redis

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.keys import DEFAULT_ACCOUNT, Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.quota.headers import Statement
from optimum_bridge.quota.rate import Quota, RateLimit

log = logging.getLogger(__name__)

#: AIMD after an unexplained 429: windows at the learned limit before it grows by one per window,
#: doubled by each 429 that comes back before the limit is back, up to ``MAX_HOLD_WINDOWS``.
HOLD_WINDOWS = 4
MAX_HOLD_WINDOWS = 64
#: A stated window outside this range is garbage (seconds).
MIN_STATED_WINDOW_S, MAX_STATED_WINDOW_S = 1.0, 86_400.0
#: A statement is trusted for this many windows (the longer of stated and configured) unless restated.
STATEMENT_WINDOWS = 2


@dataclass(frozen=True)
class LimiterState:
    """An account's limiter as people read it: ``optimum-bridge quota``, ``/ui``, ``/metrics``."""

    configured: int
    window_s: float  # the configured window (without the margin)
    limit: int  # the limit in force now: min(configured, learned)
    interval_s: float  # the slot interval in force
    in_window: int  # calls started in the current window
    paused_s: float  # seconds left in the pause after a 429 (0: none)
    held_s: float  # seconds until the next slot (pause, pacer, window or a used-up statement)
    learned: dict[str, str] = field(default_factory=dict)  # the learned fields of the state, decoded
    now_ms: int = 0  # the Redis clock when read
    log_window_ms: int = 0  # the window the limiter counts over (margin included)

    def _ms(self, name: str) -> int:
        return int(self.learned.get(name, "0"))

    @property
    def stated(self) -> bool:
        """Whether a header statement of the limit is still trusted."""
        return "h_limit" in self.learned and self._ms("h_until") > self.now_ms

    @property
    def learned_from_429s(self) -> bool:
        """Whether the limit in force comes from unexplained 429s (not from headers)."""
        return bool(self.why) and not (self.stated and self._ms("h_limit") == self.limit)

    @property
    def since_ms(self) -> int:
        """Since when (Redis clock, ms) the learned limit is what lowers the configured one."""
        return self._ms("a_since") if self.learned_from_429s else self._ms("h_since")

    @property
    def recovered_at_ms(self) -> int | None:
        """When the limit learned from 429s is back at the configured one, if no 429 comes again."""
        if not self.learned_from_429s:
            return None
        steps = self._ms("a_hold") + self.configured - self._ms("a_limit")
        return self._ms("a_since") + steps * self.log_window_ms

    @property
    def why(self) -> str:
        """Why the limit in force is what it is (empty when it is the configured one)."""
        if self.limit >= self.configured:
            return ""
        if self.stated and self._ms("h_limit") == self.limit:
            return self.learned.get("h_reason", "headers")
        return self.learned.get("a_reason", "learned from 429s")

    @property
    def learned_text(self) -> str:
        """``20 (headers: X-RateLimit-Limit 20 per 60s)``, or ``—`` when nothing lowers the configured limit."""
        return f"{self.limit} ({self.why})" if self.why else "—"


class RateLimiter:
    """One account's quota as stored in Redis: its log, pacer and pause."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        rate: RateLimit,
        *,
        margin_s: float | None = None,
        burst: int = 1,
        account: str = DEFAULT_ACCOUNT,
        clock: Clock = SYSTEM_CLOCK,
        learn: bool = True,
    ) -> None:
        self._redis = client
        self.learn = learn
        self.rate = rate
        self.account = account
        self.quota = Quota.of(rate, margin_s=margin_s, burst=burst)
        self.log_key = keys.limiter_log(account)
        self.state_key = keys.limiter_state(account)
        self.pause_key = keys.limiter_pause(account)  # the previous version's, kept written
        self.learned_key = keys.limiter_learned(account)  # the previous version's, kept written
        self._margin_ms = self.quota.window_ms - round(rate.window_s * 1000)
        self._clock = clock
        self._take = scripts.register(client, "take_slot")
        self._pause = scripts.register(client, "limiter_pause")
        self._paused_for = scripts.register(client, "limiter_paused_for")
        self._stated = scripts.register(client, "limiter_stated")
        self._learn_429 = scripts.register(client, "limiter_429")
        self._state = scripts.register(client, "limiter_state")

    @property
    def window_ms(self) -> int:
        """The window the log is kept over (margin included)."""
        return self.quota.window_ms

    def take_slot(self) -> float:
        """Take a slot now if one is free; else the seconds until one may be (nothing taken)."""
        member = f"take.{uuid.uuid4().hex}"
        keys = [self.log_key, self.state_key]
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
        remaining = int(self._pause(keys=[self.state_key, self.pause_key], args=[ms]))
        log.warning("account %s: rate limiter paused for %.1fs after a 429", self.account, remaining / 1000)
        return remaining / 1000

    def observe(self, statement: Statement, *, retry_after: bool = False) -> int:
        """Follow what one answer's headers state (replacing the last statement); returns the limit in force.

        A stated limit is normalised to the configured window and capped to [1, configured]: the
        configured quota is a ceiling, whatever an answer says. With ``retry_after`` (a 429 that
        carries it) the remaining and reset are left out: ``Retry-After`` has set the pause.
        """
        stated, reason = 0, ""
        if statement.limit is not None:
            stated, reason = self._normalise(statement)
        remaining, reset_ms = -1, 0
        if statement.remaining is not None and statement.reset_s is not None and not retry_after:
            horizon_s = max(self.rate.window_s, self._window_of(statement))
            reset_ms = round(min(statement.reset_s, horizon_s) * 1000) + self._margin_ms
            remaining = min(statement.remaining, self.rate.limit)
        valid_ms = round(STATEMENT_WINDOWS * max(self.rate.window_s, self._window_of(statement)) * 1000)
        raw = -1 if statement.limit is None else statement.limit
        args: list[str | int | float] = [*self.quota.args()[:2], stated, valid_ms, reason, remaining, reset_ms, raw]
        return int(self._stated(keys=[self.state_key, self.log_key, self.learned_key], args=args))

    def _window_of(self, statement: Statement) -> float:
        window = statement.window_s if statement.window_s is not None else self.rate.window_s
        return min(MAX_STATED_WINDOW_S, max(MIN_STATED_WINDOW_S, window))

    def _normalise(self, statement: Statement) -> tuple[int, str]:
        """The stated limit per configured window, capped to [1, configured], and why, for people."""
        window = self._window_of(statement)
        per_window = int((statement.limit or 0) * self.rate.window_s // window)
        capped = max(1, min(self.rate.limit, per_window))
        reason = f"headers: {replace(statement, remaining=None, reset_s=None).describe()}"
        if capped != per_window or window != self.rate.window_s:
            reason += f" = {capped} per {self.rate.window_s:g}s"
        if per_window > self.rate.limit:
            reason += " (capped at the configured limit)"
        return capped, reason

    def learn_from_429(self, detail: str) -> int:
        """Lower the learned limit after a 429 no header explains (AIMD); the limit in force (0: none learned)."""
        args: list[str | int | float] = [*self.quota.args()[:2], HOLD_WINDOWS, MAX_HOLD_WINDOWS, detail]
        keys = [self.log_key, self.state_key, self.learned_key]
        limit, starts, hold = (int(v) for v in self._learn_429(keys=keys, args=args))
        if limit:
            log.warning(
                "account %s: a 429 at %d calls in the window (configured %d, %s): limit lowered to %d, "
                "growing back by one per window after %d windows",
                self.account,
                starts,
                self.rate.limit,
                detail,
                limit,
                hold,
            )
        return limit

    def state(self) -> LimiterState:
        """What the limiter holds now (read in one step)."""
        raw = self._state(keys=[self.log_key, self.state_key], args=self.quota.args())
        now, limit, interval, in_window, pause, at = (int(v) for v in raw[:6])
        learned = {text(raw[i]): text(raw[i + 1]) for i in range(6, len(raw), 2)}
        return LimiterState(
            configured=self.rate.limit,
            window_s=self.rate.window_s,
            limit=limit,
            interval_s=interval / 1000,
            in_window=in_window,
            paused_s=max(0, pause - now) / 1000,
            held_s=max(0, at - now) / 1000,
            learned=learned,
            now_ms=now,
            log_window_ms=self.quota.window_ms,
        )

    def paused_for(self) -> float:
        """Seconds left in the current pause (0 when none)."""
        return int(self._paused_for(keys=[self.state_key])) / 1000

    def starts(self) -> list[int]:
        """Start times (ms, Redis clock) of the calls in the current window, oldest first (the log may
        hold older ones: it is trimmed only when full)."""
        seconds, micros = self._redis.time()
        since = int(seconds) * 1000 + int(micros) // 1000 - self.quota.window_ms
        entries = self._redis.zrangebyscore(self.log_key, f"({since}", "+inf", withscores=True)
        return [int(entry[1]) for entry in entries]
