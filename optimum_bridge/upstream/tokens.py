"""The shared access token: cached in Redis, refreshed by exactly one process.

``get`` returns the cached token while it has more than a margin of life left.
Otherwise one process takes a Redis lock (``SET NX PX``), fetches a new token
and stores it; the others poll the key until it appears and reuse it. A 401
calls ``invalidate(token)``, which deletes the stored token only if it is still
the one that failed (compare-and-delete on a fingerprint), so a newer token
another worker already stored survives. The token is a ``SecretStr`` and only
its fingerprint is ever logged.

A process keeps the token it read for ``LOCAL_S`` (never into the refresh
margin), so a call costs no Redis read (issue 17); a token another process
dropped after a 401 is at worst met once more by this one, whose own 401 then
drops it here too.

A runtime account's token is stored only if the account's record still holds the
credentials it was fetched with (``lua/token_put.lua``, spec §12a): a fetch begun
with the old secret and ending after a rotation is discarded, and the token is
fetched again with the new one.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import redis
from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from optimum_bridge.clock import SYSTEM_CLOCK, Clock
from optimum_bridge.errors import TokenError
from optimum_bridge.keys import DEFAULT_ACCOUNT, Keys, text
from optimum_bridge.lua import scripts
from optimum_bridge.schemas import TokenResponse

log = logging.getLogger(__name__)

#: How long a process reuses the token it read from Redis without reading it again.
LOCAL_S = 5.0


def fingerprint(value: str) -> str:
    """A short, non-reversible name for a token, safe to log and compare."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Token:
    """An access token and when it stops being usable (epoch seconds)."""

    value: SecretStr = field(repr=False)
    fingerprint: str
    expires_at: float


class TokenCipher:
    """Encryption of the token at rest: Fernet with ``BRIDGE_TOKEN_ENCRYPTION_KEY``, else none."""

    def __init__(self, key: SecretStr | None = None) -> None:
        self._fernet = Fernet(key.get_secret_value().encode()) if key is not None else None

    def __repr__(self) -> str:
        return f"TokenCipher(encrypted={self._fernet is not None})"

    def encrypt(self, value: str) -> str:
        """The stored form of ``value``."""
        return self._fernet.encrypt(value.encode()).decode() if self._fernet else value

    def decrypt(self, stored: str) -> str:
        """The token from its stored form (``TokenError`` if it cannot be read with our key)."""
        if self._fernet is None:
            return stored
        try:
            return self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken:
            raise TokenError("token_undecryptable", "the stored token cannot be decrypted with this key") from None


class Identity(Protocol):
    """Where new tokens come from: the identity server (``identity.IdentityClient``)."""

    def fetch(self) -> TokenResponse:
        """A new token, or a ``TokenError``."""
        ...


@runtime_checkable
class CheckedIdentity(Identity, Protocol):
    """An identity that says which credentials it fetched with: a runtime account's (spec §12a)."""

    def fetch_checked(self) -> tuple[TokenResponse, Mapping[str, str]]:
        """A new token, and the fields of the account's record (``fp``, ``client_id``) it was fetched with."""
        ...


class TokenStore:
    """Hands out the one token, fetching a new one under a lock when needed."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        identity: Identity,
        *,
        account: str = DEFAULT_ACCOUNT,
        cipher: TokenCipher | None = None,
        clock: Clock = SYSTEM_CLOCK,
        refresh_margin_s: float = 300.0,
        lock_ttl_s: float = 30.0,
        poll_s: float = 0.05,
    ) -> None:
        self._redis = client
        self._keys = keys
        self.account = account
        self._token_key = keys.token(account)
        self._lock_key = keys.token_lock(account)
        self._identity = identity
        self._cipher = cipher or TokenCipher()
        self._clock = clock
        self._margin = refresh_margin_s
        self._lock_ttl_ms = int(lock_ttl_s * 1000)
        self._poll_s = poll_s
        self._local: tuple[Token, float] | None = None  # the token read last, and until when (monotonic)
        self._record_key = keys.account(account)
        self._delete_if = scripts.register(client, "token_delete_if")
        self._put = scripts.register(client, "token_put")
        self._release_if = scripts.register(client, "release")

    def cached(self) -> Token | None:
        """The stored token, if any (expired ones vanish with their key)."""
        raw = self._redis.hgetall(self._token_key)
        if not raw or b"value" not in raw:
            return None
        value = self._cipher.decrypt(text(raw[b"value"]))
        return Token(SecretStr(value), text(raw[b"fp"]), float(raw[b"exp"]))

    def peek(self) -> Token | None:
        """The token this process read less than ``LOCAL_S`` ago, if any: no Redis, no refresh."""
        local = self._local
        return local[0] if local is not None and self._clock.monotonic() < local[1] else None

    def get(self) -> Token:
        """A usable token; fetches one (in exactly one process) when needed."""
        local = self._local
        if local is not None and self._clock.monotonic() < local[1]:
            return local[0]
        token = self._get()
        usable_s = min(LOCAL_S, token.expires_at - self._margin - self._clock.time())
        self._local = (token, self._clock.monotonic() + usable_s) if usable_s > 0 else None
        return token

    def _get(self) -> Token:
        deadline = self._clock.monotonic() + self._lock_ttl_ms / 1000 * 2
        while True:
            token = self.cached()
            if token is not None:
                return token
            owner = uuid.uuid4().hex
            if self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ttl_ms):
                try:
                    fresh = self.cached() or self._refresh()
                finally:
                    self._release_if(keys=[self._lock_key], args=[owner])
                if fresh is not None:
                    return fresh
                continue  # fetched with credentials changed meanwhile: fetch again with the current ones
            if self._clock.monotonic() > deadline:
                raise TokenError("token_timeout", "timed out waiting for another process to fetch the token")
            self._clock.sleep(self._poll_s)

    def invalidate(self, token: Token) -> bool:
        """Forget ``token`` if it is still the stored one; True when deleted."""
        local = self._local
        if local is not None and local[0].fingerprint == token.fingerprint:
            self._local = None
        deleted = bool(self._delete_if(keys=[self._token_key], args=[token.fingerprint]))
        outcome = "dropped" if deleted else "already replaced"
        log.info("account %s: token %s rejected by the API; %s", self.account, token.fingerprint, outcome)
        return deleted

    def _refresh(self) -> Token | None:
        """Fetch and store a token; None when the credentials changed during the fetch (it is discarded)."""
        if isinstance(self._identity, CheckedIdentity):
            answer, used = self._identity.fetch_checked()
        else:  # an account of the file: no record to check
            answer, used = self._identity.fetch(), {}
        value = answer.access_token.get_secret_value()
        now = self._clock.time()
        margin = min(self._margin, answer.expires_in / 10)
        usable_s = max(1.0, answer.expires_in - margin)
        token = Token(answer.access_token, fingerprint(value), now + answer.expires_in)
        args: list[str | float] = [
            self._cipher.encrypt(value),
            token.fingerprint,
            token.expires_at,
            int(usable_s * 1000),
        ]
        outcome = text(self._put(keys=[self._token_key, self._record_key], args=[*args, *_pairs(used)]))
        if outcome == "changed":
            log.info(
                "account %s: token %s discarded, the credentials changed meanwhile", self.account, token.fingerprint
            )
            return None
        if outcome == "gone":  # removed: the call under way may use it, no other will
            log.info("account %s: token %s not stored, the account was removed", self.account, token.fingerprint)
            return token
        log.info("account %s: fetched token %s, valid for %ss", self.account, token.fingerprint, answer.expires_in)
        return token


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [v for item in fields.items() for v in item]
