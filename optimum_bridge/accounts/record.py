"""A runtime account's record as Redis holds it (``keys.account``), read back into what it means.

``Stored`` is the hash of one account created at runtime (spec §12a), its
secret still encrypted: ``account`` decrypts it into the ``Account`` a worker
calls with, ``view`` shows it as the API does. ``accounts.store`` writes the
records, ``accounts.registry`` follows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from optimum_bridge.accounts.cipher import SecretsCipher
from optimum_bridge.accounts.model import AccountView
from optimum_bridge.config.accounts import Account, AccountFields
from optimum_bridge.keys import text
from optimum_bridge.quota.rate import RateLimit


@dataclass(frozen=True)
class Stored:
    """An account's record as Redis holds it (the secret still encrypted)."""

    name: str
    fields: dict[str, str]

    @classmethod
    def of(cls, name: str, raw: dict[bytes, bytes]) -> Stored | None:
        """The record from an ``HGETALL`` reply (None: no such account)."""
        return cls(name, {text(k): text(v) for k, v in raw.items()}) if raw else None

    def account(self, cipher: SecretsCipher, *, sandbox_url: str) -> Account:
        """The account, its secret decrypted (``SecretsKeyError`` naming it if no key can)."""
        f = self.fields
        secret = cipher.decrypt(f["secret"], account=self.name)
        api_url, token_url = self.where(sandbox_url)
        rate = RateLimit.parse(f["rate_limit"])
        return Account(self.name, f["client_id"], secret, api_url, token_url, rate, f.get("openapi_url", ""))

    def where(self, sandbox_url: str) -> tuple[str, str]:
        """The API and token URLs it calls."""
        f = self.fields
        fields = AccountFields.model_construct(
            client_id=f["client_id"],
            environment=f.get("environment") or None,  # type: ignore[arg-type]  # stored by ``create``, checked
            api_url=f.get("api_url") or None,
            token_url=f.get("token_url") or None,
        )
        return fields.endpoints(sandbox_url)

    def view(self, *, sandbox_url: str) -> AccountView:
        """How the API shows it."""
        f = self.fields
        api_url, token_url = self.where(sandbox_url)
        return AccountView(
            name=self.name,
            source="api",
            client_id=f["client_id"],
            environment=f.get("environment") or None,
            api_url=api_url,
            token_url=token_url,
            openapi_url=f.get("openapi_url") or None,
            rate_limit=f["rate_limit"],
            secret_fingerprint=f["fp"],
            created_at=_moment(f.get("created_ms")),
            updated_at=_moment(f.get("updated_ms")),
        )


def members(reply: object) -> list[str]:
    """The members of a sorted-set reply without scores, as text."""
    return [text(raw) for raw in cast("list[bytes]", reply)]


def _moment(ms: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, UTC) if ms else None
