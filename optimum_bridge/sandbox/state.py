"""Mutable state of the sandbox: knobs, tokens, per-client quota, scripted faults, stats.

One ``SandboxState`` per simulator. Its methods are called from the server's
event loop and from test threads (``SandboxServer``), so every read-modify-write
happens under one lock. Time comes from an injectable clock (monotonic).
"""

from __future__ import annotations

import math
import random
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.sandbox.config import FaultResponse, FaultSpec, SandboxConfig
from optimum_bridge.sandbox.fleet import Fleet, generate_fleet

LOG_LIMIT = 100_000


@dataclass
class Counters:
    """What the sandbox has seen since the last reset."""

    token_requests: int = 0
    token_failures: int = 0
    calls: int = 0
    accepted: int = 0
    quota_rejected: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    token_requests_by_client: dict[str, int] = field(default_factory=dict)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))


@dataclass(frozen=True)
class QuotaDecision:
    """Outcome of a quota check: accepted, or rejected with seconds to wait; and what the headers may state."""

    accepted: bool
    retry_after_s: int = 0
    limit: int = 0  # 0: no quota
    window_s: float = 0.0
    remaining: int = 0
    reset_s: int = 0  # seconds until one more call is allowed (the oldest arrival leaves the window)


class SandboxState:
    """The simulator's memory. Thread-safe."""

    def __init__(self, config: SandboxConfig | None = None, *, clock: Clock | None = None):
        self.clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()
        self.config = config or SandboxConfig()
        self.fleet: Fleet = generate_fleet(self.config.seed, self.config.fleet_size)
        self._tokens: dict[str, tuple[str, float]] = {}
        self._windows: dict[str, deque[float]] = {}
        self._faults: list[FaultSpec] = []
        self.counters = Counters()
        self.rng = random.Random(self.config.seed)

    # -- knobs ---------------------------------------------------------------

    def configure(self, patch: dict[str, Any]) -> SandboxConfig:
        """Apply a partial update; raises ValidationError, leaving knobs unchanged."""
        with self._lock:
            merged = self.config.model_dump() | patch
            new = SandboxConfig.model_validate(merged)
            regenerate = (new.seed, new.fleet_size) != (
                self.config.seed,
                self.config.fleet_size,
            )
            self.config = new
            if regenerate:
                self.fleet = generate_fleet(new.seed, new.fleet_size)
                self.rng = random.Random(new.seed)
            return new

    def reset(self) -> None:
        """Forget counters, log, faults, tokens, quota windows and created persons."""
        with self._lock:
            self.counters = Counters()
            self._tokens.clear()
            self._windows.clear()
            self._faults.clear()
            self.fleet = generate_fleet(self.config.seed, self.config.fleet_size)
            self.rng = random.Random(self.config.seed)

    # -- tokens --------------------------------------------------------------

    def issue_token(self, client_id: str) -> tuple[str, int]:
        """A fresh opaque token for ``client_id`` and its lifetime in seconds."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            lifetime = self.config.token_lifetime_s
            self._tokens[token] = (client_id, self.clock.monotonic() + lifetime)
        return token, lifetime

    def client_for(self, token: str) -> str | None:
        """The client owning a valid, unexpired, unrevoked token, else None."""
        with self._lock:
            entry = self._tokens.get(token)
            if entry is None:
                return None
            if self.clock.monotonic() >= entry[1]:
                del self._tokens[token]
                return None
            return entry[0]

    def revoke_all(self) -> int:
        """Invalidate every token issued so far; returns how many were live."""
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
            return count

    def count_token_request(self, *, failed: bool, client_id: str | None = None) -> None:
        """Count one request to the token endpoint."""
        with self._lock:
            self.counters.token_requests += 1
            self.counters.token_failures += int(failed)
            if client_id is not None:
                by_client = self.counters.token_requests_by_client
                by_client[client_id] = by_client.get(client_id, 0) + 1

    # -- quota ---------------------------------------------------------------

    def admit(self, client_id: str, arrival: float) -> QuotaDecision:
        """Sliding-window check: accept unless N accepted arrivals lie in the last window."""
        with self._lock:
            limit = self.config.quota_limit(client_id)
            if limit is None:
                return QuotaDecision(accepted=True)
            allowed, window = limit
            arrivals = self._windows.setdefault(client_id, deque())
            while arrivals and arrivals[0] <= arrival - window:
                arrivals.popleft()
            if len(arrivals) >= allowed:
                wait = max(1, math.ceil(arrivals[-allowed] + window - arrival))
                return QuotaDecision(False, wait, allowed, window, 0, wait)
            arrivals.append(arrival)
            reset = max(1, math.ceil(arrivals[0] + window - arrival))
            return QuotaDecision(True, 0, allowed, window, allowed - len(arrivals), reset)

    # -- faults --------------------------------------------------------------

    def add_faults(self, spec: FaultSpec) -> int:
        """Queue scripted answers; returns how many answers are pending in total."""
        with self._lock:
            self._faults.append(spec)
            return self._pending_faults()

    def take_fault(self, method: str, path: str) -> FaultResponse | None:
        """Pop the next scripted answer for this request, if one is queued."""
        with self._lock:
            for spec in self._faults:
                if spec.matches(method, path):
                    response = spec.responses.pop(0)
                    if not spec.responses:
                        self._faults.remove(spec)
                    return response
            return None

    def faults(self) -> list[dict[str, Any]]:
        """The pending scripted answers, as JSON."""
        with self._lock:
            return [spec.model_dump() for spec in self._faults]

    def _pending_faults(self) -> int:
        return sum(len(spec.responses) for spec in self._faults)

    # -- stats ---------------------------------------------------------------

    def begin_call(self, method: str, path: str, arrival: float) -> dict[str, Any]:
        """Log an API call on arrival; the entry is completed by ``end_call``."""
        entry: dict[str, Any] = {
            "t": arrival,
            "method": method,
            "path": path,
            "status": None,
            "client_id": None,
            "accepted": False,
        }
        with self._lock:
            self.counters.calls += 1
            self.counters.log.append(entry)
        return entry

    def mark_accepted(self, entry: dict[str, Any], client_id: str) -> None:
        """The call passed auth and quota: it counts against the quota."""
        with self._lock:
            entry["client_id"] = client_id
            entry["accepted"] = True
            self.counters.accepted += 1

    def mark_quota_rejected(self, entry: dict[str, Any], client_id: str) -> None:
        """The call was refused by the quota (429)."""
        with self._lock:
            entry["client_id"] = client_id
            self.counters.quota_rejected += 1

    def end_call(self, entry: dict[str, Any], status: int) -> None:
        """Record the status sent for a logged call."""
        with self._lock:
            entry["status"] = status
            key = str(status)
            self.counters.by_status[key] = self.counters.by_status.get(key, 0) + 1

    def _by_client(self, log: list[dict[str, Any]]) -> dict[str, Any]:
        """Per client: calls accepted, 429s, token requests and the most calls in any of its windows."""
        tokens = self.counters.token_requests_by_client
        clients = {entry["client_id"] for entry in log if entry["client_id"]} | set(tokens)
        return {
            client: _client_stats(
                [e for e in log if e["client_id"] == client], self.config.quota_limit(client), tokens.get(client, 0)
            )
            for client in sorted(clients)
        }

    def stats(self) -> dict[str, Any]:
        """Counters, the log and ``max_in_window`` as JSON."""
        with self._lock:
            c = self.counters
            log = [dict(entry) for entry in c.log]
            limit = self.config.quota_limit()
            by_status = dict(c.by_status)
            return {
                "token_requests": c.token_requests,
                "token_failures": c.token_failures,
                "calls": c.calls,
                "accepted": c.accepted,
                "rate_limited": by_status.get("429", 0),
                "quota_rejected": c.quota_rejected,
                "unauthorized": by_status.get("401", 0),
                "by_status": by_status,
                "quota": self.config.quota,
                "max_in_window": max_in_window(log, limit[1]) if limit else None,
                "by_client": self._by_client(log),
                "pending_faults": self._pending_faults(),
                "log": log,
            }


def _client_stats(log: list[dict[str, Any]], limit: tuple[int, float] | None, tokens: int) -> dict[str, Any]:
    return {
        "accepted": sum(1 for entry in log if entry["accepted"]),
        "rate_limited": sum(1 for entry in log if entry["status"] == 429),
        "token_requests": tokens,
        "max_in_window": max_in_window(log, limit[1]) if limit else None,
    }


def max_in_window(log: list[dict[str, Any]], window: float) -> int:
    """Most accepted arrivals found together in any window ``(t - window, t]``."""
    times = sorted(entry["t"] for entry in log if entry["accepted"])
    best, first = 0, 0
    for last, arrival in enumerate(times):
        while times[first] <= arrival - window:
            first += 1
        best = max(best, last - first + 1)
    return best
