"""Accounts at runtime without Redis (spec §12a): the file's rules on a new account, the secrets key setting,
the cipher's rotation, the fingerprint, and no secret in a repr or an error."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr, ValidationError

from optimum_bridge.accounts.cipher import SecretsCipher, SecretsKeyError, fingerprint
from optimum_bridge.accounts.model import AccountPatch, NewAccount
from optimum_bridge.errors import ConfigError, first_problem
from optimum_bridge.process.observability import secret_values
from optimum_bridge.settings import Settings, load_settings

SECRET = "unit-s3cret-value"


def test_the_secrets_key_is_checked_at_start_in_one_line() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={}, _env_file=None, BRIDGE_SECRETS_KEY=f"{Fernet.generate_key().decode()},nope")
    assert str(refused.value) == (
        "BRIDGE_SECRETS_KEY: key 2 of 2 is not a Fernet key (32 url-safe base64-encoded bytes); "
        "keys are separated by commas"
    )
    key = Fernet.generate_key().decode()
    settings = load_settings(environ={}, _env_file=None, BRIDGE_SECRETS_KEY=key)
    assert key not in repr(settings)


def test_the_first_key_encrypts_and_every_one_decrypts() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored = SecretsCipher(SecretStr(old)).encrypt(SecretStr(SECRET))
    both = SecretsCipher(SecretStr(f"{new},{old}"))
    assert both.decrypt(stored, account="a").get_secret_value() == SECRET
    rotated = both.rotate(stored, account="a")
    assert SecretsCipher(SecretStr(new)).decrypt(rotated, account="a").get_secret_value() == SECRET
    with pytest.raises(SecretsKeyError) as refused:
        SecretsCipher(SecretStr(old)).decrypt(rotated, account="a")
    assert SECRET not in str(refused.value) and "account 'a'" in str(refused.value)
    assert SECRET not in repr(both) and new not in repr(both)
    with pytest.raises(ConfigError, match=r"^BRIDGE_SECRETS_KEY: set it"):
        SecretsCipher(None).encrypt(SecretStr(SECRET))


def test_the_fingerprint_is_the_first_8_hex_digits_of_sha256() -> None:
    assert fingerprint(SECRET) == hashlib.sha256(SECRET.encode()).hexdigest()[:8]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"environment": "preprod", "api_url": "http://a.example", "token_url": "http://t.example/t"},
         'api_url: http:// only with environment = "sandbox" (credentials would travel in clear)'),
        ({"environment": None}, "environment: required, or api_url and token_url"),
        ({"rate_limit": "0/m"}, "rate_limit: expected N/s, N/m or N/h with N >= 1, got '0/m'"),
        ({"client_secret_env": "X"}, "client_secret_env: Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_a_new_account_follows_the_accounts_file_rules(fields: dict[str, object], expected: str) -> None:
    body = {"name": "newco", "client_id": "c", "client_secret": SECRET, "environment": "sandbox", **fields}
    with pytest.raises(ValidationError) as refused:
        NewAccount.model_validate(body)
    line = first_problem(refused.value)
    assert line.endswith(expected) and "\n" not in line and SECRET not in line


def test_a_sandbox_account_may_call_plain_http_and_hides_its_secret() -> None:
    body = {"name": "n", "client_id": "c", "client_secret": SECRET, "environment": "sandbox",
            "api_url": "http://127.0.0.1:8090", "token_url": "http://127.0.0.1:8090/connect/token"}  # fmt: skip
    account = NewAccount.model_validate(body)
    assert SECRET not in repr(account) and SECRET not in str(account)
    assert AccountPatch.model_validate({}).is_empty()
    assert not AccountPatch.model_validate({"rate_limit": "2/s"}).is_empty()


def test_the_encryption_keys_are_scrubbed_whole_and_each_alone() -> None:
    """Sentry events and logs never show ``BRIDGE_SECRETS_KEY`` or ``BRIDGE_TOKEN_ENCRYPTION_KEY``, nor one
    key of a rotation list."""
    first, second, token_key = (Fernet.generate_key().decode() for _ in range(3))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, BRIDGE_SECRETS_KEY=f"{first}, {second}", BRIDGE_TOKEN_ENCRYPTION_KEY=token_key
    )
    assert {first, second, token_key} <= set(secret_values(settings))
