"""Checks a process makes at start, before it takes any work: each fails with one line naming the setting."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from optimum_bridge.errors import ConfigError
from optimum_bridge.schedules.model import file_schedules
from optimum_bridge.settings import Settings


def require_simulator(settings: Settings) -> None:
    """With ``OPTIMUM_ENVIRONMENT=sandbox``, a ``ConfigError`` unless the simulator's host name resolves.

    A compose stack started without its sandbox profile would otherwise retry
    every call for hours against a name that does not exist, its workers alive
    and its ``/readyz`` green. This only looks the name up; it sends nothing.
    """
    if settings.environment != "sandbox":
        return
    host = urlsplit(settings.token_url).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        variable = "OPTIMUM_TOKEN_URL" if settings.token_url_override else "OPTIMUM_SANDBOX_URL"
        raise ConfigError(
            f"{variable}: the simulator's host {host!r} does not resolve; with OPTIMUM_ENVIRONMENT=sandbox it must "
            "run (docker compose: --profile sandbox, or COMPOSE_PROFILES=sandbox in .env)"
        ) from None


def require_schedules(settings: Settings) -> None:
    """A ``ConfigError`` naming the schedule and field if a ``[schedules.NAME]`` of the accounts file is wrong
    (every template rendered for a tick now): refused at start, never at 2 a.m."""
    file_schedules(settings.accounts)
