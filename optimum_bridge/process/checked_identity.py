"""A runtime account's identity that names the credentials each token was fetched with (spec §12a).

``upstream.tokens.TokenStore`` stores a token only if the account's record still
holds them (``lua/token_put.lua``): a fetch begun with the old secret and ending
after a rotation is discarded, and the next fetch uses the new secret. It
replaces ``process.live_accounts.CurrentIdentity``, doing what it does (the
registry looks at Redis before each fetch) and returning the ``fp`` and
``client_id`` it used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from optimum_bridge.accounts.cipher import fingerprint
from optimum_bridge.schemas import TokenResponse
from optimum_bridge.upstream.identity import IdentityClient

if TYPE_CHECKING:
    from optimum_bridge.config.accounts import Account
    from optimum_bridge.process.runtime import AccountRuntime


class CheckedCurrentIdentity:
    """Fetches with the credentials stored *now*, and says which (``upstream.tokens.CheckedIdentity``)."""

    def __init__(self, parts: AccountRuntime, identity: IdentityClient) -> None:
        self._parts = parts
        self._identity = identity
        self._account = parts.account

    def fetch(self) -> TokenResponse:
        """A new token, with the account's current credentials."""
        return self.fetch_checked()[0]

    def fetch_checked(self) -> tuple[TokenResponse, Mapping[str, str]]:
        """A new token, and the record's fields (``fp``, ``client_id``) of the credentials it was fetched with."""
        registry = self._parts.runtime.registry
        registry.refresh(force=True)
        current = registry.get(self._account.name)
        if current is not None and current != self._account:
            self._identity, self._account = self._parts.identity(current), current
        return self._identity.fetch(), used(self._account)


def used(account: Account) -> dict[str, str]:
    """The fields of an account's record that name its credentials (as ``accounts.store`` writes them)."""
    client_id, secret = account.require_credentials()
    return {"fp": fingerprint(secret.get_secret_value()), "client_id": client_id}
