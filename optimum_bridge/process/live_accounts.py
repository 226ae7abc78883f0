"""The worker's parts of each account, following the accounts created at runtime (spec §12a).

``LiveAccounts`` maps an account's name to its token, quota and API client
(``AccountRuntime``), built when first needed and built again
when the registry (``accounts.registry``) sees its record change;
``LiveApis`` is the executor's view of it; ``CurrentIdentity`` fetches a
runtime account's tokens with the credentials stored at that moment.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optimum_bridge.accounts.cipher import fingerprint
from optimum_bridge.errors import TokenError
from optimum_bridge.process.lazy import lazy
from optimum_bridge.schemas import TokenResponse
from optimum_bridge.upstream.client import OptimumClient
from optimum_bridge.upstream.identity import IdentityClient
from optimum_bridge.upstream.tokens import TokenCipher, TokenStore

if TYPE_CHECKING:
    from optimum_bridge.config.accounts import Account
    from optimum_bridge.process.runtime import Runtime
    from optimum_bridge.quota.limiter import RateLimiter


@dataclass
class AccountRuntime:
    """One account's parts: its token, quota and API client (built lazily)."""

    runtime: Runtime
    account: Account
    limiter: RateLimiter

    @property
    def build_lock(self) -> threading.RLock:
        return self.runtime.build_lock

    def identity(self, account: Account) -> IdentityClient:
        """Where ``account``'s tokens come from, with its credentials."""
        rt = self.runtime
        client_id, secret = account.require_credentials()
        return IdentityClient(
            rt.api_http,
            token_url=account.token_url,
            client_id=client_id,
            client_secret=secret,
            metrics=rt.metrics.for_account(account.name),
        )

    @lazy
    def tokens(self) -> TokenStore:
        rt = self.runtime
        identity: IdentityClient | CurrentIdentity = self.identity(self.account)
        if self.account.name not in rt.settings.accounts:  # created at runtime: its secret may rotate
            identity = CurrentIdentity(self, self.identity(self.account))
        cipher = TokenCipher(rt.settings.token_encryption_key)
        return TokenStore(rt.redis, rt.keys, identity, cipher=cipher, account=self.account.name)

    @lazy
    def api(self) -> OptimumClient:
        rt = self.runtime
        return OptimumClient(
            rt.api_http,
            api_url=self.account.api_url,
            tokens=self.tokens,
            limiter=self.limiter,
            metrics=rt.metrics.for_account(self.account.name),
            max_wait_s=rt.max_wait_s,
            max_response_bytes=rt.settings.max_response_bytes,
        )


class CurrentIdentity:
    """A runtime account's identity that fetches with the credentials stored *now* (spec §12a).

    A token is fetched rarely; before each fetch the registry looks at Redis at once, so a worker
    that has not yet seen a rotation (it looks every second) never fetches a token with the old
    secret after the change dropped the token: the next call fetches one, once. ``fetch_checked``
    also says which credentials it used: ``upstream.tokens.TokenStore`` stores the token only if the
    account's record still holds them (``lua/token_put.lua``), so a fetch begun with the old secret
    and ending after a rotation is discarded. A removed account gets no new token.
    """

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
        if current is None:  # removed: a call under way finishes with the token it has, and gets no other
            raise TokenError("account_removed", f"account {self._account.name!r} was removed: no new token")
        if current != self._account:
            self._identity, self._account = self._parts.identity(current), current
        return self._identity.fetch(), credentials_of(self._account)


def credentials_of(account: Account) -> dict[str, str]:
    """The fields of an account's record that name its credentials (as ``accounts.store`` writes them)."""
    client_id, secret = account.require_credentials()
    return {"fp": fingerprint(secret.get_secret_value()), "client_id": client_id}


class LiveAccounts(Mapping[str, "AccountRuntime"]):
    """Each account's parts, by name, following the registry: an account created at runtime is built when
    first needed, one whose record changed is built again (a new quota; its token was dropped by the change),
    and a removed one is no longer listed; its parts stay reachable by name for a call under way."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._built: dict[str, AccountRuntime] = {}

    def active(self, name: str) -> AccountRuntime | None:
        """The account's parts, None once it is removed (or never was)."""
        account = self._rt.registry.get(name)
        if account is None:
            return None
        built = self._built.get(name)
        if built is None or built.account != account:
            with self._rt.build_lock:
                built = self._built.get(name)
                if built is None or built.account != account:
                    built = self._rt._account(account)
                    self._built[name] = built
        return built

    def __getitem__(self, name: str) -> AccountRuntime:
        built = self.active(name) or self._built.get(name)  # removed: what a call under way was using
        if built is None:
            raise KeyError(name)
        return built

    def __iter__(self) -> Iterator[str]:
        return iter(self._rt.registry.names())

    def __len__(self) -> int:
        return len(self._rt.registry.names())


class LiveApis(Mapping[str, OptimumClient]):
    """The executor's view of the accounts' API clients: ``get`` is None for an account removed or unknown
    (its message is left alone), ``[]`` still answers for one removed while its call was under way."""

    def __init__(self, accounts: LiveAccounts) -> None:
        self._accounts = accounts

    def get(self, name: str, default: OptimumClient | None = None) -> OptimumClient | None:  # type: ignore[override]
        built = self._accounts.active(name)
        return built.api if built is not None else default

    def __getitem__(self, name: str) -> OptimumClient:
        return self._accounts[name].api

    def __iter__(self) -> Iterator[str]:
        return iter(self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)
