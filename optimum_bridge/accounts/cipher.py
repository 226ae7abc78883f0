"""The secrets of runtime accounts at rest: Fernet with ``BRIDGE_SECRETS_KEY`` (MultiFernet for rotation).

A comma-separated list of keys: the first encrypts, every one decrypts, so an
operator adds a new key in front, restarts, runs ``optimum-bridge accounts
rekey`` and then drops the old one. A secret that no key decrypts is a
``SecretsKeyError`` naming the account, never its value.
"""

from __future__ import annotations

import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from optimum_bridge.errors import ConfigError

#: Every runtime account's secret this process has handled, for the Sentry scrubber
#: (``process.observability``), which cannot know them from the settings.
_SEEN: set[str] = set()

MISSING = "BRIDGE_SECRETS_KEY: set it (a Fernet key) to store accounts' secrets in Redis"


class SecretsKeyError(ConfigError):
    """A stored secret cannot be read with ``BRIDGE_SECRETS_KEY`` (a wrong key, or none)."""


def seen_secrets() -> list[str]:
    """The runtime accounts' secrets this process has encrypted or decrypted (to scrub them)."""
    return list(_SEEN)


def fingerprint(secret: str) -> str:
    """What the API shows of a secret (spec §12a): the first 8 hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


class SecretsCipher:
    """Encrypts with the first key of ``BRIDGE_SECRETS_KEY``, decrypts with any of them."""

    def __init__(self, key: SecretStr | None) -> None:
        parts = [part.strip() for part in key.get_secret_value().split(",")] if key is not None else []
        self._fernet = MultiFernet([Fernet(part.encode()) for part in parts if part]) if parts else None

    def __repr__(self) -> str:
        return f"SecretsCipher(configured={self._fernet is not None})"

    @property
    def configured(self) -> bool:
        """Whether ``BRIDGE_SECRETS_KEY`` is set."""
        return self._fernet is not None

    def encrypt(self, secret: SecretStr) -> str:
        """The stored form of ``secret`` (``ConfigError`` without a key)."""
        if self._fernet is None:
            raise ConfigError(MISSING)
        _SEEN.add(secret.get_secret_value())
        return self._fernet.encrypt(secret.get_secret_value().encode()).decode()

    def decrypt(self, stored: str, *, account: str) -> SecretStr:
        """The secret of ``account`` from its stored form (``SecretsKeyError`` naming the account)."""
        if self._fernet is None:
            raise SecretsKeyError(f"BRIDGE_SECRETS_KEY: not set, and account {account!r} is stored in Redis")
        try:
            secret = self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken:
            raise SecretsKeyError(
                f"BRIDGE_SECRETS_KEY: cannot decrypt the secret of account {account!r} (not the key it was stored with)"
            ) from None
        _SEEN.add(secret)
        return SecretStr(secret)

    def rotate(self, stored: str, *, account: str) -> str:
        """``stored`` encrypted again with the first key."""
        if self._fernet is None:
            raise ConfigError(MISSING)
        try:
            return self._fernet.rotate(stored.encode()).decode()
        except InvalidToken:
            raise SecretsKeyError(
                f"BRIDGE_SECRETS_KEY: cannot decrypt the secret of account {account!r} (not the key it was stored with)"
            ) from None
