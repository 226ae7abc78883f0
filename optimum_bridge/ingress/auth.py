"""Who may call the ingress, and which accounts each key may use (spec §12).

Keys come from ``BRIDGE_API_KEYS`` (every account) and from the accounts file's
``[api_keys.NAME]`` tables (a SHA-256 digest, limited to some accounts). A
presented key is hashed and compared with every digest, with no early exit, so
the time taken says nothing about which key matched. A key limited to some
accounts can submit to those only, and sees only their jobs and batches: any
other id answers 404, exactly as an unknown one. An **admin** key (spec §12a:
``admin = true`` in its ``[api_keys.NAME]``, or one of ``BRIDGE_ADMIN_KEYS``,
which may use every account) may also manage schedules; any other gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from optimum_bridge.ingress.http import CHALLENGE, ProblemError, invalid
from optimum_bridge.schemas import Operation
from optimum_bridge.settings import Settings


@dataclass(frozen=True)
class Caller:
    """The key a request came with: the accounts it may use (None: every one)."""

    accounts: frozenset[str] | None
    admin: bool = False

    def may_use(self, account: str) -> bool:
        """Whether this key may submit to and read ``account``."""
        return self.accounts is None or account in self.accounts

    def check(self, operations: list[Operation], *, single: bool = False) -> None:
        """422 naming ``account`` (as for an unknown one) if an operation's account is not this key's."""
        for index, operation in enumerate(operations):
            if not self.may_use(operation.account):
                where = "account" if single else f"operations[{index}].account"
                raise invalid(f"{where}: unknown account {operation.account!r}")


@dataclass(frozen=True)
class KeyRing:
    """Every accepted key's digest and the accounts it may use."""

    entries: tuple[tuple[bytes, Caller], ...]

    @classmethod
    def of(cls, settings: Settings) -> KeyRing:
        """``BRIDGE_API_KEYS`` (every account), ``BRIDGE_ADMIN_KEYS`` (every account, admin) and the accounts
        file's keys."""

        def digest(key: SecretStr) -> bytes:
            return hashlib.sha256(key.get_secret_value().encode()).digest()

        plain = [(digest(key), Caller(None)) for key in settings.api_keys]
        admins = [(digest(key), Caller(None, admin=True)) for key in settings.admin_keys]
        limited = [(key.digest, Caller(key.accounts, admin=key.admin)) for key in settings.accounts.keys]
        return cls(tuple(admins + plain + limited))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def match(self, presented: str) -> Caller | None:
        """The caller ``presented`` is, compared with every key (no early exit), or None."""
        candidate = hashlib.sha256(presented.encode()).digest()
        found: Caller | None = None
        for digest, caller in self.entries:
            if hmac.compare_digest(candidate, digest) and found is None:
                found = caller
        return found


async def require_key(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(HTTPBearer(auto_error=False))],
) -> Caller:
    """401 unless the request carries ``Authorization: Bearer <an accepted key>``; the caller otherwise."""
    if credentials is None:
        raise ProblemError(401, "Authorization: Bearer <API key> is required", headers=CHALLENGE)
    caller: Caller | None = request.app.state.key_ring.match(credentials.credentials)
    if caller is None:
        raise ProblemError(401, "the API key is not accepted", headers=CHALLENGE)
    return caller


CallerDep = Annotated[Caller, Depends(require_key)]


async def require_admin(caller: CallerDep) -> Caller:
    """403 unless the caller's key is an admin key (spec §12a)."""
    if not caller.admin:
        raise ProblemError(403, "this needs an admin key (admin = true in [api_keys.NAME], or BRIDGE_ADMIN_KEYS)")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]
