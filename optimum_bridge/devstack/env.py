"""The environment of a bridge process the harness starts: its settings and a clean process environment.

``bridge_settings`` are the variables (spec §3 names) of a bridge talking to a
sandbox, with the values every harness user shares; ``child_env`` is this
process's environment without any inherited bridge setting -- so a developer's
real credentials cannot leak into a sandbox run -- plus those settings and an
import path to this source tree; ``settings_from`` builds ``Settings``
exactly as a process with those variables does (no ``.env`` file).
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from optimum_bridge.settings import Settings

BRIDGE_PREFIXES = ("OPTIMUM_", "BRIDGE_", "SENTRY_")
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds optimum_bridge/


class SandboxAddress(Protocol):
    """Where a sandbox answers: the in-process ``SandboxServer`` or a sandbox process."""

    @property
    def url(self) -> str: ...

    @property
    def token_url(self) -> str: ...


def new_callback_secret(raw: bytes | None = None) -> str:
    """A ``whsec_`` callback secret from ``raw`` (a fixed one for tests), else 32 random bytes."""
    return "whsec_" + base64.b64encode(raw if raw is not None else secrets.token_bytes(32)).decode()


def bridge_settings(
    redis_url: str, sandbox: SandboxAddress, *, prefix: str, callback_secret: str, **overrides: str
) -> dict[str, str]:
    """The variables of a bridge using ``redis_url`` under ``prefix`` against ``sandbox`` (overrides win)."""
    values = {
        "OPTIMUM_ENVIRONMENT": "sandbox",
        "OPTIMUM_API_URL": sandbox.url,
        "OPTIMUM_TOKEN_URL": sandbox.token_url,
        "OPTIMUM_RATE_LIMIT": "30/m",
        "OPTIMUM_TIMEOUT_S": "10",
        "BRIDGE_REDIS_URL": redis_url,
        "BRIDGE_KEY_PREFIX": prefix,
        "BRIDGE_CALLBACK_SECRET": callback_secret,
        "BRIDGE_CALLBACK_ALLOW_PRIVATE": "true",  # the receiver listens on loopback
    }
    values.update(overrides)
    return values


def child_env(
    settings: Mapping[str, str], *, base: Mapping[str, str] | None = None, drop: tuple[str, ...] = BRIDGE_PREFIXES
) -> dict[str, str]:
    """``base`` (default: this environment) without variables starting with ``drop``, plus ``settings``.

    ``PYTHONPATH`` starts with the source root, so ``python -m optimum_bridge...``
    runs this tree from any working directory; output is unbuffered, so logs
    are complete when a child is killed.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(drop)}
    env.update(settings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def settings_from(values: Mapping[str, str]) -> Settings:
    """``Settings`` exactly as a process with these variables builds them (other variables ignored)."""
    fields: dict[str, Any] = {k: v for k, v in values.items() if k.startswith(BRIDGE_PREFIXES)}
    settings = Settings(_env_file=None, **fields)
    settings.load_accounts(values)  # the accounts' secrets come from these variables too
    return settings
