"""``optimum-bridge quota``: per account, the configured quota, what was learned and why, calls, the pause.

Everything is read from Redis (``BridgeClient.quota_state``), so it shows what
every worker follows right now, whichever host runs the command; it needs no
credentials.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from optimum_bridge.producer import BridgeClient
from optimum_bridge.quota.limiter import LimiterState
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.settings import load_settings


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(name: str, state: LimiterState) -> list[str]:
    """The lines printed for one account."""
    configured = RateLimit(state.configured, state.window_s)
    lines = [name, f"  configured  {configured}"]
    if state.why:
        learned = f"{RateLimit(state.limit, state.window_s)} since {_at(state.since_ms)}: {state.why}"
        recovered = state.recovered_at_ms
        if recovered is not None:
            learned += f"; back to {configured} by {_at(recovered)} unless a 429 comes again"
        else:
            learned += f"; trusted until {_at(int(state.learned['h_until']))} unless restated"
        lines.append(f"  learned     {learned}")
    else:
        lines.append("  learned     — (the configured limit holds)")
    if state.stated and not (state.why and state.recovered_at_ms is None):
        trusted = _at(int(state.learned["h_until"]))
        lines.append(f"  stated      {state.learned.get('h_reason', '')} (trusted until {trusted} unless restated)")
    if "h_remaining" in state.learned and int(state.learned["h_reset"]) > state.now_ms:
        lines.append(f"  remaining   {state.learned['h_remaining']} calls until {_at(int(state.learned['h_reset']))}")
    lines.append(
        f"  in window   {state.in_window} calls (limit in force {state.limit}, one slot every {state.interval_s:.2f} s)"
    )
    if state.paused_s > 0:
        lines.append(f"  paused      until {_at(state.now_ms + round(state.paused_s * 1000))} ({state.paused_s:.1f} s)")
    else:
        lines.append("  paused      no")
    return lines


def cmd_quota(args: argparse.Namespace, extra: list[str]) -> int:
    """Print each account's quota as the limiter holds it now."""
    with BridgeClient(load_settings()) as client:
        for name in client.settings.accounts.names:
            print("\n".join(describe(name, client.quota_state(name))))
    return 0
