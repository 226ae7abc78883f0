"""The commands that set a bridge up: ``init-env`` writes a first ``.env``, ``config check`` reads one.

``init-env`` makes what a first run of the docker-compose stack needs and
nobody should type by hand: fresh random ingress keys, callback secret,
Redis password and Flower login, with the sandbox environment. ``config
check`` loads the settings and the accounts as a worker would and prints
one line per problem (exit 2), or one line saying what it found (exit 0).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import SettingsError

from optimum_bridge.cli.commands import UsageError
from optimum_bridge.config.checks import require_schedules, require_simulator
from optimum_bridge.errors import ConfigError
from optimum_bridge.settings import Settings, describe_each, load_settings

ENV_TEMPLATE = """\
# Written by `optimum-bridge init-env`: the secrets of a local stack, made fresh for it.
# Keep it out of version control (.gitignore has it). Every other setting, and what each
# one means, is in .env.example; add what you change below.

# Against the bundled simulator, no Optimum credentials. For the real API set
# OPTIMUM_ENVIRONMENT=preprod (or production), OPTIMUM_CLIENT_ID and OPTIMUM_CLIENT_SECRET;
# the simulator's URLs then no longer apply.
OPTIMUM_ENVIRONMENT=sandbox
# docker compose starts the `sandbox` service with every `up` while this names it.
COMPOSE_PROFILES=sandbox

# Bearer keys of the HTTP ingress (comma-separated).
BRIDGE_API_KEYS={api_key}
# Signs every callback (Standard Webhooks); give it to your callback receivers.
BRIDGE_CALLBACK_SECRET={callback_secret}
# Local stack only: callbacks may go to private addresses (host.docker.internal, other containers).
BRIDGE_CALLBACK_ALLOW_PRIVATE=true

# docker-compose.yml: the Redis password, and Flower's login (user:password).
BRIDGE_REDIS_PASSWORD={redis_password}
FLOWER_BASIC_AUTH=admin:{flower_password}
"""


def env_text() -> str:
    """A new ``.env``: every secret random, drawn from ``secrets``."""
    return ENV_TEMPLATE.format(
        api_key=secrets.token_urlsafe(32),
        callback_secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        redis_password=secrets.token_hex(24),
        flower_password=secrets.token_urlsafe(18),
    )


def cmd_init_env(args: argparse.Namespace, extra: list[str]) -> int:
    """Write a fresh ``.env`` (mode 0600); an existing one is kept unless ``--force``."""
    path = Path(args.path)
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists: not overwritten (--force replaces it)")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(env_text())
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file --force replaces
    print(f"wrote {path}: sandbox environment, fresh API key, callback secret, Redis and Flower passwords")
    return 0


def problems(env_file: str) -> tuple[Settings | None, list[str]]:
    """The settings (None if they cannot load) and one line per problem found."""
    try:
        Settings(_env_file=env_file)
    except ValidationError as exc:
        return None, describe_each(exc)
    except SettingsError:
        pass  # a value that cannot even be decoded: load_settings names it below
    try:
        settings = load_settings(_env_file=env_file)
    except ConfigError as exc:
        return None, [str(exc)]
    found = []
    for account in settings.accounts.by_name.values():
        try:
            account.require_credentials()
        except ConfigError as exc:
            found.append(f"account {account.name}: {exc}")
    for check in (require_simulator, require_schedules):
        try:
            check(settings)
        except ConfigError as exc:
            found.append(str(exc))
    if settings.callback_secret is None:
        found.append("BRIDGE_CALLBACK_SECRET: not set: callbacks cannot be signed and go to the dead-letter list")
    if not settings.api_keys and not settings.admin_keys and not settings.accounts.keys:
        found.append("BRIDGE_API_KEYS: not set: the HTTP ingress (optimum-bridge api) refuses to start")
    return settings, found


def cmd_config_check(args: argparse.Namespace, extra: list[str]) -> int:
    """Print one line per configuration problem (exit 2), or a summary of what a worker would use."""
    settings, found = problems(args.env_file)
    for line in found:
        print(f"optimum-bridge: configuration error: {line}", file=sys.stderr)
    if found or settings is None:
        return 2
    for name in settings.accounts.names:
        account = settings.accounts[name]
        print(f"ok: account {name}: {settings.environment if name == 'default' else 'file'}: API {account.api_url}")
    return 0
