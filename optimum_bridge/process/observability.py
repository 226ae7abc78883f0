"""Logging and Sentry set-up, with secrets scrubbed before anything leaves.

The Sentry ``before_send`` hook removes known secret values wherever they
appear in an event; a failing hook never breaks the main path.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from optimum_bridge.accounts.cipher import seen_secrets
from optimum_bridge.errors import ConfigError
from optimum_bridge.settings import Settings

log = logging.getLogger(__name__)

REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_NAMES = ("authorization", "client_secret", "access_token", "token", "secret", "password", "api_key", "dsn")


def secret_values(settings: Settings) -> list[str]:
    """Every configured secret value, longest first (for substring scrubbing)."""
    accounts = [account.client_secret for account in settings.accounts.by_name.values()]
    values = [settings.client_secret, settings.callback_secret, settings.sentry_dsn, *settings.api_keys]
    values += [*settings.admin_keys, *accounts, settings.redis_sentinel_password]
    # The encryption keys, and each key of a comma-separated list alone.
    for keys in (settings.secrets_key, settings.token_encryption_key):
        if keys is not None:
            values += [keys, *(SecretStr(part.strip()) for part in keys.get_secret_value().split(","))]
    proxies = [url for url in (settings.proxy_url, settings.callback_proxy_url) if url is not None]
    plain = [v.get_secret_value() for v in values if v is not None and len(v.get_secret_value()) >= 4]
    for proxy in proxies:  # the URL, and its password alone (it may appear decoded)
        password = urlsplit(proxy.get_secret_value()).password
        plain += [proxy.get_secret_value(), *([unquote(password)] if password and len(password) >= 4 else [])]
    return sorted(plain, key=len, reverse=True)


def scrub(value: Any, secrets: list[str]) -> Any:
    """``value`` with secret strings and secret-named fields replaced."""
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return _BEARER.sub(r"\1" + REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and any(n in k.lower() for n in _SECRET_NAMES) else scrub(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(scrub(v, secrets) for v in value)
    return value


SENTRY_MISSING = "SENTRY_DSN is set but the 'sentry' extra is not installed: pip install 'optimum-bridge[sentry]'"


def require_sentry(settings: Settings) -> None:
    """``ConfigError`` when ``SENTRY_DSN`` is set but sentry-sdk cannot be imported (checked at start)."""
    if settings.sentry_dsn is not None and importlib.util.find_spec("sentry_sdk") is None:
        raise ConfigError(SENTRY_MISSING)


def init_sentry(settings: Settings, *, component: str, transport: Any = None) -> bool:
    """Start Sentry when ``SENTRY_DSN`` is set; returns whether it did.

    Raises ``ConfigError`` when ``SENTRY_DSN`` is set but the ``sentry`` extra is
    not installed: running on without the error reporting asked for would hide it.
    """
    if settings.sentry_dsn is None:
        return False
    try:
        import sentry_sdk  # noqa: PLC0415 - the sentry extra, optional
        from sentry_sdk.integrations.celery import CeleryIntegration  # noqa: PLC0415 - the sentry extra, optional
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "sentry_sdk":
            raise
        raise ConfigError(SENTRY_MISSING) from None

    secrets = secret_values(settings)

    def before_send(event: Any, hint: Any) -> Any:
        try:  # with the secrets of the accounts created at runtime that this process has seen (spec §12a)
            runtime = [value for value in seen_secrets() if len(value) >= 4]
            return scrub(event, sorted({*secrets, *runtime}, key=len, reverse=True))
        except Exception:  # a broken scrubber must not leak: drop the event
            log.warning("sentry scrubber failed; event dropped", exc_info=True)
            return None

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        integrations=[CeleryIntegration()],
        before_send=before_send,
        send_default_pii=False,
        server_name=component,
        http_proxy="",  # "": no HTTP_PROXY / HTTPS_PROXY from the environment: it would carry the DSN elsewhere
        https_proxy="",
        **({"transport": transport} if transport is not None else {}),
    )
    return True
