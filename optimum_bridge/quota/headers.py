"""The quota as one answer states it: rate-limit headers parsed as pure functions.

Two families are read, whichever an answer carries (spec §13):

- the IETF draft (draft-ietf-httpapi-ratelimit-headers) in its successive
  forms: ``RateLimit-Policy: 30;w=60`` with ``RateLimit: limit=30,
  remaining=5, reset=40`` (or the older separate ``RateLimit-Limit`` /
  ``-Remaining`` / ``-Reset``), and the newer ``RateLimit-Policy:
  "default";q=30;w=60`` with ``RateLimit: "default";r=5;t=40``;
- the de-facto ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``, whose reset
  is seconds from now or an epoch time (seconds or milliseconds).

A value that is not a number, is negative, or is absurd is ignored (logged at
debug level), never raised: a header is a hint, not a contract. Capping what
is stated to the configured quota is the limiter's business
(``ratelimit.RateLimiter.observe``), not this module's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Reset values above this are epoch times, not delays (1e9 s is September 2001).
_EPOCH_S = 1_000_000_000
_EPOCH_MS = 1_000_000_000_000
#: Numbers beyond this are garbage, whatever the header (no quota counts 10^9 calls).
_MAX_NUMBER = 1_000_000_000
_INT = re.compile(r"^\s*(\d{1,12})\s*$")
_NUMBER = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,6})?)\s*$")


@dataclass(frozen=True)
class Statement:
    """What one answer states of the quota: any of limit per window, calls remaining, seconds until renewed."""

    style: str  # "ietf" or "x"
    limit: int | None = None
    window_s: float | None = None  # None: the answer does not say (the configured window is assumed)
    remaining: int | None = None
    reset_s: float | None = None  # seconds from now until ``remaining`` is renewed

    @property
    def used_up(self) -> bool:
        """The answer says no call remains: a 429 it comes with is explained."""
        return self.remaining == 0

    def describe(self) -> str:
        """One line for people: ``X-RateLimit-Limit 20 per 60s, remaining 3, reset in 12s``."""
        name = "RateLimit" if self.style == "ietf" else "X-RateLimit"
        parts = []
        if self.limit is not None:
            per = f" per {self.window_s:g}s" if self.window_s is not None else ""
            parts.append(f"{name}-Limit {self.limit}{per}" if self.style == "x" else f"{name} limit {self.limit}{per}")
        if self.remaining is not None:
            parts.append(f"remaining {self.remaining}")
        if self.reset_s is not None:
            parts.append(f"reset in {self.reset_s:g}s")
        return ", ".join(parts) or name


def parse_rate_headers(headers: Mapping[str, str], *, now: float) -> Statement | None:
    """The statement of an answer's rate-limit headers (IETF first, then X-), or None when it carries none usable.

    ``now`` (epoch seconds) turns an epoch ``X-RateLimit-Reset`` into seconds from now.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    for parse in (_ietf, _x_style):
        statement = parse(lowered, now)
        if statement is not None:
            return statement
    return None


def _ietf(headers: Mapping[str, str], now: float) -> Statement | None:
    limit, window = _policy(headers.get("ratelimit-policy"))
    remaining, reset, stated_limit = _ratelimit_field(headers.get("ratelimit"))
    if "ratelimit" not in headers:  # the draft's first form: three separate fields
        stated_limit = _first_int(headers.get("ratelimit-limit"), "RateLimit-Limit")
        remaining = _first_int(headers.get("ratelimit-remaining"), "RateLimit-Remaining")
        reset = _seconds(headers.get("ratelimit-reset"), "RateLimit-Reset")
    if limit is None:
        limit = stated_limit
    if limit is None and remaining is None:
        return None
    return Statement("ietf", limit, window, remaining, reset)


def _x_style(headers: Mapping[str, str], now: float) -> Statement | None:
    limit = _first_int(headers.get("x-ratelimit-limit"), "X-RateLimit-Limit")
    remaining = _first_int(headers.get("x-ratelimit-remaining"), "X-RateLimit-Remaining")
    reset = _seconds(headers.get("x-ratelimit-reset"), "X-RateLimit-Reset")
    if reset is not None and reset >= _EPOCH_S:
        reset = max(0.0, (reset / 1000 if reset >= _EPOCH_MS else reset) - now)
    if limit is None and remaining is None:
        return None
    return Statement("x", limit, None, remaining, reset)


def _policy(value: str | None) -> tuple[int | None, float | None]:
    """The most restrictive policy of ``RateLimit-Policy`` as ``(quota, window)``: ``10;w=60`` or ``"p";q=10;w=60``."""
    if value is None:
        return None, None
    best: tuple[int | None, float | None] = (None, None)
    for item in _split_list(value):
        head, params = _item(item)
        quota = _first_int(params.get("q", head), "RateLimit-Policy quota")
        window = _seconds(params["w"], "RateLimit-Policy w") if "w" in params else None
        if quota is None or (window is not None and window <= 0):
            continue
        if best[0] is None or _rate(quota, window) < _rate(best[0], best[1]):
            best = (quota, window)
    return best


def _rate(quota: int, window: float | None) -> float:
    return quota / window if window else float(quota)


def _ratelimit_field(value: str | None) -> tuple[int | None, float | None, int | None]:
    """``(remaining, reset, limit)`` of ``RateLimit``: ``limit=10, remaining=5, reset=40`` or ``"p";r=5;t=40``."""
    if value is None:
        return None, None, None
    remaining: int | None = None
    reset: float | None = None
    limit: int | None = None
    members: dict[str, str] = {}
    for item in _split_list(value):
        head, params = _item(item)
        if "=" in head:  # a dictionary member of the older combined form
            key, _, raw = head.partition("=")
            members[key.strip().lower()] = raw
        elif "r" in params:  # a list item of the newer form: the smallest remaining wins
            r = _first_int(params["r"], "RateLimit r")
            if r is not None and (remaining is None or r < remaining):
                remaining, reset = r, _seconds(params.get("t"), "RateLimit t")
    if members:
        limit = _first_int(members.get("limit"), "RateLimit limit")
        remaining = _first_int(members.get("remaining"), "RateLimit remaining")
        reset = _seconds(members.get("reset"), "RateLimit reset")
    return remaining, reset, limit


def _split_list(value: str) -> list[str]:
    """A structured-field list's members (commas inside quoted strings are kept)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _item(item: str) -> tuple[str, dict[str, str]]:
    """``head;k=v;k2=v2`` → ``(head, {k: v})``; for ``limit=10`` alone the head is ``limit=10``."""
    head, *rest = item.split(";")
    params = {}
    for param in rest:
        key, _, raw = param.partition("=")
        params[key.strip().lower()] = raw.strip()
    return head.strip(), params


def _first_int(value: str | None, name: str) -> int | None:
    """A non-negative integer (the first of a comma-separated list, as some servers repeat it)."""
    if value is None:
        return None
    match = _INT.match(value.split(",")[0])
    if match is None or int(match.group(1)) > _MAX_NUMBER:
        log.debug("ignored the rate-limit header %s: %r is not a count", name, value[:80])
        return None
    return int(match.group(1))


def _seconds(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    match = _NUMBER.match(value.split(",")[0])
    if match is None:
        log.debug("ignored the rate-limit header %s: %r is not a number of seconds", name, value[:80])
        return None
    return float(match.group(1))
