"""Several Optimum accounts on one bridge (spec §12): the accounts file, read once at start.

Without ``BRIDGE_ACCOUNTS_FILE`` there is one account, ``default``, from the
``OPTIMUM_*`` variables. With it, the accounts are those the TOML file names
(read with ``tomllib``); ``OPTIMUM_*`` credentials, when set, still define
``default`` unless the file names one. A secret is never in the file: each
account names the environment variable that holds it. The file may also hold
ingress keys, as SHA-256 digests, each limited to some accounts (which may be accounts
created at runtime, ``accounts.store``, even before they exist). Anything
wrong stops the process at start with one line naming the account and the
field, e.g. ``BRIDGE_ACCOUNTS_FILE: accounts.acme.client_secret_env: ACME_SECRET is not set``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError, model_validator

from optimum_bridge.config.environments import ENDPOINTS, sandbox_endpoints
from optimum_bridge.errors import ConfigError, blame, first_problem
from optimum_bridge.quota.rate import RateLimit, RateLimitField
from optimum_bridge.schemas import ACCOUNT_NAME

DEFAULT = "default"
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^/\s]+")]


class AccountFields(BaseModel):
    """Where an account calls and its quota: the rules every account follows, from the file or created at
    runtime (spec §12a reuses them)."""

    model_config = ConfigDict(extra="forbid")

    client_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    environment: Literal["preprod", "production", "sandbox"] | None = None
    api_url: Url | None = None
    token_url: Url | None = None
    openapi_url: Url | None = None  # default: <api_url>/swagger/v1/swagger.json
    rate_limit: RateLimitField = RateLimit(30, 60.0)

    @model_validator(mode="after")
    def _where(self) -> AccountFields:
        if (self.api_url is None) != (self.token_url is None):
            missing, given = ("token_url", "api_url") if self.token_url is None else ("api_url", "token_url")
            raise blame(missing, f"required with {given}")
        if self.environment is None and self.api_url is None:
            raise blame("environment", "required, or api_url and token_url")
        if self.environment != "sandbox":
            # The OpenAPI document is fetched with the account's token when it is on the API's host.
            for name in ("api_url", "token_url", "openapi_url"):
                if (getattr(self, name) or "").startswith("http://"):
                    raise blame(name, 'http:// only with environment = "sandbox" (credentials would travel in clear)')
        return self

    def endpoints(self, sandbox_url: str) -> tuple[str, str]:
        """The API base URL and the token URL this account calls."""
        if self.api_url is not None and self.token_url is not None:
            return self.api_url.rstrip("/"), self.token_url
        if self.environment == "sandbox":
            return sandbox_endpoints(sandbox_url)
        return ENDPOINTS[self.environment or "preprod"]


class AccountEntry(AccountFields):
    """One ``[accounts.NAME]`` table."""

    client_secret_env: EnvName


class KeyEntry(BaseModel):
    """One ``[api_keys.NAME]`` table: an ingress key's digest and the accounts it may use."""

    model_config = ConfigDict(extra="forbid")

    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    accounts: list[Annotated[str, StringConstraints(pattern=ACCOUNT_NAME)]] | None = None
    admin: bool = False  # spec §12a: may manage schedules (and accounts)


class AccountsFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    accounts: dict[Annotated[str, StringConstraints(pattern=ACCOUNT_NAME)], AccountEntry] = Field(min_length=1)
    api_keys: dict[str, KeyEntry] = Field(default_factory=dict)
    # spec §15, checked whole by schedules.model.file_schedules (at a worker's start, and the ingress's): a
    # producer reading this file loads no template engine.
    schedules: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Account:
    """An Optimum client: its credentials, where it calls, its quota."""

    name: str
    client_id: str | None
    client_secret: SecretStr | None = field(repr=False)
    api_url: str
    token_url: str
    rate_limit: RateLimit
    openapi_url: str = ""  # the API's OpenAPI document (spec §13); empty: the Swashbuckle default

    @property
    def document_url(self) -> str:
        """Where the account's OpenAPI document is fetched."""
        return self.openapi_url or f"{self.api_url.rstrip('/')}/swagger/v1/swagger.json"

    def require_credentials(self) -> tuple[str, SecretStr]:
        """The credentials, or a ``ConfigError`` naming what is missing (only ``OPTIMUM_*`` can lack them)."""
        if not self.client_id:
            raise ConfigError("OPTIMUM_CLIENT_ID: required to call the API (or set OPTIMUM_ENVIRONMENT=sandbox)")
        if self.client_secret is None or not self.client_secret.get_secret_value():
            raise ConfigError("OPTIMUM_CLIENT_SECRET: required to call the API")
        return self.client_id, self.client_secret


@dataclass(frozen=True)
class ApiKey:
    """An ingress key from the accounts file (its digest), limited to ``accounts`` (None: every one)."""

    name: str
    digest: bytes
    accounts: frozenset[str] | None
    admin: bool = False


@dataclass(frozen=True)
class Accounts:
    """Every account of the bridge, by name, and the ingress keys of the accounts file."""

    by_name: dict[str, Account]
    keys: tuple[ApiKey, ...] = ()
    schedules: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # spec §15: [schedules.NAME], as read

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __getitem__(self, name: str) -> Account:
        return self.by_name[name]

    @property
    def names(self) -> list[str]:
        """The account names, ``default`` first when there is one."""
        return sorted(self.by_name, key=lambda name: (name != DEFAULT, name))


def _read(path: Path) -> AccountsFile:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"BRIDGE_ACCOUNTS_FILE: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"BRIDGE_ACCOUNTS_FILE: not valid TOML ({exc})") from None
    try:
        return AccountsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"BRIDGE_ACCOUNTS_FILE: {first_problem(exc, whole='file')}") from None


def load_accounts(file: Path | None, *, default: Account, sandbox_url: str, environ: Mapping[str, str]) -> Accounts:
    """The accounts of ``file`` beside ``default`` (the ``OPTIMUM_*`` one); ``ConfigError`` naming account and field.

    Without a file, ``default`` is the only account, credentials or not (they are
    checked when a call needs them); with one, it joins the file's when it has a client id.
    """
    if file is None:
        return Accounts({DEFAULT: default})
    parsed = _read(file)
    accounts: dict[str, Account] = {}
    if default.client_id and DEFAULT not in parsed.accounts:
        accounts[DEFAULT] = default
    for name, entry in parsed.accounts.items():
        secret = environ.get(entry.client_secret_env)
        if not secret:
            where = f"accounts.{name}.client_secret_env"
            raise ConfigError(f"BRIDGE_ACCOUNTS_FILE: {where}: {entry.client_secret_env} is not set")
        api_url, token_url = entry.endpoints(sandbox_url)
        accounts[name] = Account(
            name, entry.client_id, SecretStr(secret), api_url, token_url, entry.rate_limit, entry.openapi_url or ""
        )
    keys = []
    for key_name, key in parsed.api_keys.items():
        # A name the file does not define is an account created at runtime (spec §12a), now or later:
        # the key sees it once it exists, and nothing of it before.
        allowed = frozenset(key.accounts) if key.accounts is not None else None
        keys.append(ApiKey(key_name, bytes.fromhex(key.sha256), allowed, key.admin))
    return Accounts(accounts, tuple(keys), parsed.schedules)
