"""What an integrator sends and sees of an account (spec §12a), checked by the accounts file's rules.

``NewAccount`` (``POST /v1/accounts``) and ``AccountPatch`` (``PATCH``) reuse
``config.accounts.AccountFields``: the same fields, defaults and checks as an
``[accounts.NAME]`` table (plain http only with ``environment = "sandbox"``),
with the secret itself instead of the name of a variable. ``AccountView`` is
what is shown: never the secret, only its fingerprint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, StringConstraints, field_validator

from optimum_bridge.config.accounts import Account, AccountFields, Url
from optimum_bridge.quota.rate import RateLimit, RateLimitField
from optimum_bridge.schemas import ACCOUNT_NAME

AccountName = Annotated[str, StringConstraints(pattern=ACCOUNT_NAME)]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_SECRET = 4096


def _secret(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not 1 <= len(value.get_secret_value()) <= MAX_SECRET:
        raise ValueError(f"expected 1 to {MAX_SECRET} characters")
    return value


class NewAccount(AccountFields):
    """The body of ``POST /v1/accounts``."""

    name: AccountName
    client_secret: SecretStr

    _check_secret = field_validator("client_secret")(_secret)


class AccountPatch(BaseModel):
    """The body of ``PATCH /v1/accounts/{name}``: what may change (a rotation, another quota)."""

    model_config = ConfigDict(extra="forbid")

    client_secret: SecretStr | None = None
    client_id: ClientId | None = None
    rate_limit: RateLimitField | None = None
    openapi_url: Url | None = None

    _check_secret = field_validator("client_secret")(_secret)

    def is_empty(self) -> bool:
        """Whether it changes nothing."""
        return not self.model_fields_set


class AccountView(BaseModel):
    """An account as the API shows it: never its secret."""

    name: str
    source: Literal["file", "api"]
    client_id: str | None
    environment: str | None = None
    api_url: str
    token_url: str
    openapi_url: str | None = None
    rate_limit: str
    secret_fingerprint: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AccountPage(BaseModel):
    """One page of ``GET /v1/accounts``, by name; ``next_cursor`` is where the next page starts (None: last)."""

    accounts: list[AccountView]
    next_cursor: str | None


def file_view(account: Account, fingerprint: str | None) -> AccountView:
    """How an account of the accounts file (or ``default``) is listed."""
    return AccountView(
        name=account.name,
        source="file",
        client_id=account.client_id,
        api_url=account.api_url,
        token_url=account.token_url,
        openapi_url=account.openapi_url or None,
        rate_limit=str(account.rate_limit),
        secret_fingerprint=fingerprint,
    )


def rate_text(rate: RateLimit) -> str:
    """A rate limit as stored."""
    return str(rate)
