"""Configuration: one ``Settings`` object, read from the environment and ``.env``.

Names follow the spec (``OPTIMUM_*`` for the API, ``BRIDGE_*`` for the bridge).
Secrets are ``SecretStr`` so no ``repr``, log line or error message shows them.
``load_settings`` turns a validation failure into one line naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from optimum_bridge.config.accounts import DEFAULT, Account, Accounts, load_accounts
from optimum_bridge.config.environments import (
    ENDPOINTS,
    SANDBOX_CREDENTIALS,
    Environment,
    plain_http_refused,
    sandbox_endpoints,
)
from optimum_bridge.config.values import (
    callback_key,
    check_ca_bundle,
    check_fernet_key,
    check_fernet_keys,
    check_proxy,
    check_url,
    split_keys,
    split_seconds,
)
from optimum_bridge.errors import ConfigError, field_problems, one_line
from optimum_bridge.process.redis import check_redis_url
from optimum_bridge.quota.rate import Quota, RateLimit, RateLimitField

#: The settings without a default value: empty means unset for these.
OPTIONAL = (
    "client_id",
    "client_secret",
    "api_url_override",
    "token_url_override",
    "openapi_url",
    "callback_secret",
    "token_encryption_key",
    "secrets_key",
    "sentry_dsn",
    "accounts_file",
    "proxy_url",
    "ca_bundle",
    "callback_proxy_url",
    "redis_sentinel_password",
)


class Settings(BaseSettings):
    """Every setting of the bridge; build it once (``load_settings``) and pass it on."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True, frozen=True
    )

    environment: Environment = Field("preprod", validation_alias="OPTIMUM_ENVIRONMENT")
    client_id: str | None = Field(None, validation_alias="OPTIMUM_CLIENT_ID", min_length=1)
    client_secret: SecretStr | None = Field(None, validation_alias="OPTIMUM_CLIENT_SECRET")
    api_url_override: str | None = Field(None, validation_alias="OPTIMUM_API_URL")
    token_url_override: str | None = Field(None, validation_alias="OPTIMUM_TOKEN_URL")
    # The simulator, used only in the ``sandbox`` environment: OPTIMUM_ENVIRONMENT alone switches a stack.
    sandbox_url: str = Field(ENDPOINTS["sandbox"][0], validation_alias="OPTIMUM_SANDBOX_URL")
    rate_limit: Annotated[RateLimitField, NoDecode] = Field(RateLimit(30, 60.0), validation_alias="OPTIMUM_RATE_LIMIT")
    timeout_s: float = Field(30.0, validation_alias="OPTIMUM_TIMEOUT_S", gt=0, le=600)
    proxy_url: SecretStr | None = Field(None, validation_alias="OPTIMUM_PROXY_URL")  # may carry user:password@
    ca_bundle: Path | None = Field(None, validation_alias="OPTIMUM_CA_BUNDLE")
    max_response_bytes: int = Field(16 * 2**20, validation_alias="BRIDGE_MAX_RESPONSE_BYTES", ge=1024, le=2**30)

    redis_url: SecretStr = Field(SecretStr("redis://localhost:6379/0"), validation_alias="BRIDGE_REDIS_URL")
    redis_sentinel_password: SecretStr | None = Field(None, validation_alias="BRIDGE_REDIS_SENTINEL_PASSWORD")
    redis_min_replicas: int = Field(0, validation_alias="BRIDGE_REDIS_MIN_REPLICAS", ge=0, le=16)
    key_prefix: str = Field("obr:", validation_alias="BRIDGE_KEY_PREFIX", pattern=r"^[A-Za-z0-9_.:-]{1,32}$")
    max_attempts: int = Field(8, validation_alias="BRIDGE_MAX_ATTEMPTS", ge=1, le=100)
    max_retry_duration_s: float = Field(86400.0, validation_alias="BRIDGE_MAX_RETRY_DURATION_S", gt=0)
    redelivery_timeout_s: float = Field(300.0, validation_alias="BRIDGE_REDELIVERY_TIMEOUT_S", ge=5)
    rate_limit_margin_s: float | None = Field(None, validation_alias="BRIDGE_RATE_LIMIT_MARGIN_S", ge=0, le=60)
    rate_burst: int = Field(1, validation_alias="BRIDGE_RATE_BURST", ge=1, le=10_000)
    learn_quota: bool = Field(True, validation_alias="BRIDGE_LEARN_QUOTA")
    result_ttl_s: int = Field(7 * 86400, validation_alias="BRIDGE_RESULT_TTL_S", ge=60)
    retry_base_s: float = Field(5.0, validation_alias="BRIDGE_RETRY_BASE_S", gt=0, le=3600)
    retry_cap_s: float = Field(7200.0, validation_alias="BRIDGE_RETRY_CAP_S", gt=0)
    callback_schedule: Annotated[tuple[float, ...], NoDecode] = Field((), validation_alias="BRIDGE_CALLBACK_SCHEDULE_S")
    callback_secret: SecretStr | None = Field(None, validation_alias="BRIDGE_CALLBACK_SECRET")
    callback_allow_private: bool = Field(False, validation_alias="BRIDGE_CALLBACK_ALLOW_PRIVATE")
    callback_proxy_url: SecretStr | None = Field(None, validation_alias="BRIDGE_CALLBACK_PROXY_URL")
    callback_timeout_s: float = Field(10.0, validation_alias="BRIDGE_CALLBACK_TIMEOUT_S", gt=0, le=120)
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field((), validation_alias="BRIDGE_API_KEYS")
    admin_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field((), validation_alias="BRIDGE_ADMIN_KEYS")
    api_host: str = Field("127.0.0.1", validation_alias="BRIDGE_API_HOST", min_length=1)
    api_port: int = Field(8080, validation_alias="BRIDGE_API_PORT", ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", validation_alias="BRIDGE_LOG_LEVEL")
    token_encryption_key: SecretStr | None = Field(None, validation_alias="BRIDGE_TOKEN_ENCRYPTION_KEY")
    # Spec §12a: the secrets of accounts created at runtime, encrypted in Redis; comma-separated Fernet keys,
    # the first encrypts, every one decrypts (``optimum-bridge accounts rekey`` moves them to the first).
    secrets_key: SecretStr | None = Field(None, validation_alias="BRIDGE_SECRETS_KEY")
    sentry_dsn: SecretStr | None = Field(None, validation_alias="SENTRY_DSN")
    accounts_file: Path | None = Field(None, validation_alias="BRIDGE_ACCOUNTS_FILE")
    openapi_url: str | None = Field(None, validation_alias="OPTIMUM_OPENAPI_URL")
    validate_operations: Literal["strict", "warn", "off"] = Field(
        "strict", validation_alias="BRIDGE_VALIDATE_OPERATIONS"
    )
    _accounts: Accounts | None = PrivateAttr(None)

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        return split_keys(value)

    @field_validator("callback_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        return split_seconds(value)

    @field_validator("callback_secret")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            callback_key(value)
        return value

    @field_validator("token_encryption_key")
    @classmethod
    def _check_fernet(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_fernet_key(value.get_secret_value())
        return value

    @field_validator("secrets_key")
    @classmethod
    def _check_secrets_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_fernet_keys(value.get_secret_value())
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: SecretStr) -> SecretStr:
        check_redis_url(value.get_secret_value())
        return value

    @field_validator(*OPTIONAL, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty optional value (`OPTIMUM_API_URL=`, or ${VAR:-} in docker-compose.yml) means unset.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_url_override", "token_url_override", "openapi_url", "sandbox_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_url(value)
        return value

    @field_validator("proxy_url", "callback_proxy_url")
    @classmethod
    def _check_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_proxy(value.get_secret_value())
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            check_ca_bundle(value)
        return value

    @model_validator(mode="after")
    def _encrypted_outside_the_sandbox(self) -> Settings:
        # The client secret goes to the token URL and the access token to the API URL:
        # plain http:// only for the simulator, never for a real environment.
        if self.environment != "sandbox":
            for variable, url in (("OPTIMUM_TOKEN_URL", self.token_url), ("OPTIMUM_API_URL", self.api_url)):
                if not url.startswith("https://"):
                    raise ValueError(plain_http_refused(variable, self.environment))
        return self

    @property
    def api_url(self) -> str:
        """API base URL without a trailing slash."""
        return (self.api_url_override or self._endpoints()[0]).rstrip("/")

    @property
    def token_url(self) -> str:
        """The identity server's token endpoint."""
        return self.token_url_override or self._endpoints()[1]

    def _endpoints(self) -> tuple[str, str]:
        if self.environment == "sandbox":
            return sandbox_endpoints(self.sandbox_url)
        return ENDPOINTS[self.environment]

    def default_account(self) -> Account:
        """The account the ``OPTIMUM_*`` variables describe (the simulator's own credentials when none are set)."""
        client_id, secret = self.client_id, self.client_secret
        if self.environment == "sandbox" and client_id is None and secret is None:
            client_id, secret = SANDBOX_CREDENTIALS[0], SecretStr(SANDBOX_CREDENTIALS[1])
        return Account(
            DEFAULT,
            client_id,
            secret,
            self.api_url,
            self.token_url,
            self.rate_limit,
            self.openapi_url or "",
        )

    def require_credentials(self) -> tuple[str, SecretStr]:
        """The ``default`` account's client credentials, or a ``ConfigError`` naming the missing one."""
        return self.default_account().require_credentials()

    def load_accounts(self, environ: Mapping[str, str]) -> Accounts:
        """Read the accounts (``BRIDGE_ACCOUNTS_FILE``, secrets from ``environ``) once; ``ConfigError`` if wrong."""
        if self._accounts is None:
            self._accounts = load_accounts(
                self.accounts_file, default=self.default_account(), sandbox_url=self.sandbox_url, environ=environ
            )
        return self._accounts

    @property
    def accounts(self) -> Accounts:
        """Every account (read at start by ``load_settings``; from the process environment otherwise)."""
        return self._accounts or self.load_accounts(os.environ)

    def quota(self, account: str = "default") -> Quota:
        """An account's quota: its rate limit with the margin and the burst."""
        rate = self.accounts[account].rate_limit
        return Quota.of(rate, margin_s=self.rate_limit_margin_s, burst=self.rate_burst)

    def quotas(self) -> dict[str, Quota]:
        """Every account's quota, by name."""
        return {name: self.quota(name) for name in self.accounts.names}

    @property
    def pending_ttl_s(self) -> int:
        """How long a job's record may wait for its end: every retry it may still make, then its result's time."""
        return int(self.max_retry_duration_s) + self.result_ttl_s

    @property
    def handoff_s(self) -> float:
        """How long a dispatched job may wait for a worker to take it before it goes back to its lane."""
        return min(10.0, self.redelivery_timeout_s)

    def require_callback_secret(self) -> bytes:
        """The raw HMAC key of ``BRIDGE_CALLBACK_SECRET``, or a ``ConfigError``."""
        if self.callback_secret is None:
            raise ConfigError("BRIDGE_CALLBACK_SECRET: required to sign callbacks")
        return callback_key(self.callback_secret)


def _environment(settings: Settings) -> dict[str, str]:
    """Where accounts' secrets are read from: ``.env`` (as pydantic-settings reads it), then the environment."""
    file = settings.model_config.get("env_file")
    values = {k: v for k, v in dotenv_values(str(file)).items() if v is not None} if isinstance(file, str) else {}
    return {**values, **os.environ}


def _variable(settings_field: str) -> str:
    field = Settings.model_fields.get(settings_field)
    alias = field.validation_alias if field else None
    return alias if isinstance(alias, str) else settings_field.upper()


def describe(error: ValidationError) -> str:
    """One line naming the first bad variable, without echoing its value."""
    return describe_each(error)[0]


def describe_each(error: ValidationError) -> list[str]:
    """One line per bad variable, without echoing any value."""
    # A check across fields (no location) names the variable in its message.
    problems = field_problems(error.errors(include_input=False, include_url=False), name=lambda loc: _variable(loc[0]))
    return [one_line(problem) for problem in problems]


def load_settings(*, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings and read the accounts, raising ``ConfigError`` with one line on bad input."""
    try:
        settings = Settings(**overrides)
        settings.load_accounts(_environment(settings) if environ is None else environ)
        return settings
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
    except SettingsError as exc:  # a value pydantic-settings could not even decode
        match = re.search(r'field "(\w+)"', str(exc))
        name = _variable(match.group(1)) if match else "settings"
        raise ConfigError(f"{name}: cannot parse the value") from None
