"""The parsing and checks of single setting values, as plain functions that raise ``ValueError``.

``settings.Settings`` calls them from its field validators, and pydantic words
each failure with the variable's name (``settings.describe``): comma-separated
lists, Fernet keys, the Standard Webhooks callback secret, http(s) URLs and
proxies, a CA bundle. None imports what it checks for (a producer never needs
``cryptography``).
"""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from pathlib import Path

from pydantic import SecretStr


def split_keys(value: object) -> object:
    """Comma-separated keys (``BRIDGE_API_KEYS``) as a tuple of secrets; anything else as it is."""
    if isinstance(value, str):
        return tuple(SecretStr(part.strip()) for part in value.split(",") if part.strip())
    return value


def split_seconds(value: object) -> object:
    """Comma-separated seconds (``BRIDGE_CALLBACK_SCHEDULE_S``) as a tuple of floats; anything else as it is."""
    if isinstance(value, str):
        try:
            return tuple(float(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise ValueError("expected comma-separated seconds, e.g. 5,300,1800") from None
    return value


def is_fernet_key(text: str) -> bool:
    """What ``cryptography.Fernet`` accepts, checked without importing it (a producer never needs it)."""
    try:
        return len(base64.urlsafe_b64decode(text.encode())) == 32
    except (binascii.Error, ValueError):
        return False


def check_fernet_key(text: str) -> None:
    """One Fernet key (``BRIDGE_TOKEN_ENCRYPTION_KEY``)."""
    if not is_fernet_key(text):
        raise ValueError("expected a Fernet key (32 url-safe base64-encoded bytes)")


def check_fernet_keys(text: str) -> None:
    """Comma-separated Fernet keys (``BRIDGE_SECRETS_KEY``): the failure names which one."""
    parts = [part.strip() for part in text.split(",")]
    for index, part in enumerate(parts):
        if not is_fernet_key(part):
            raise ValueError(
                f"key {index + 1} of {len(parts)} is not a Fernet key (32 url-safe base64-encoded bytes); "
                "keys are separated by commas"
            )


def callback_key(secret: SecretStr) -> bytes:
    """Decode a Standard Webhooks secret (``whsec_`` + base64) into its key."""
    text = secret.get_secret_value()
    if not text.startswith("whsec_"):
        raise ValueError("expected whsec_ followed by base64")
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("expected whsec_ followed by valid base64") from None
    if len(key) < 16:
        raise ValueError("the key must be at least 16 bytes (24 base64 characters)")
    return key


def check_url(text: str) -> None:
    """An http:// or https:// URL with a host."""
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError("expected an http:// or https:// URL")


def check_proxy(text: str) -> None:
    """A proxy URL: scheme, optional ``user:password@``, host and port, no path."""
    if not re.match(r"^https?://[^/\s]+/?$", text):
        raise ValueError("expected an http:// or https:// proxy URL (scheme, optional user:password@, host, port)")


def check_ca_bundle(path: Path) -> None:
    """A file of PEM certificates that ``ssl`` can load."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        raise ValueError(f"cannot read PEM certificates from {str(path)!r}") from None
