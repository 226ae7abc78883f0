"""Accounts at runtime over HTTP (spec §12a): admin keys, one-line refusals, file accounts read-only, limited
keys, the secret never shown nor stored in clear. Real HTTP over loopback to an in-process ingress, real Redis."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from optimum_bridge import BridgeClient, InvalidOperation
from optimum_bridge.accounts.cipher import SecretsCipher
from optimum_bridge.accounts.registry import AccountRegistry
from optimum_bridge.accounts.store import AccountStore
from optimum_bridge.keys import Keys
from tests.support import redis_dump
from tests.system.test_ingress import local_settings, problem_of, served_ingress  # noqa: F401  (the fixture)

ADMIN = {"Authorization": "Bearer admin-key"}
PLAIN = {"Authorization": "Bearer key-two"}
LIMITED = {"Authorization": "Bearer newco-only"}
SECRET = "n3wco-s3cret-never-in-clear"
ROTATED = "n3wco-r0tated-s3cret-never-in-clear"
KEY = Fernet.generate_key().decode()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


ACCOUNTS = f"""
[accounts.acme]
client_id = "acme"
client_secret_env = "ACME_SECRET"
environment = "sandbox"

[api_keys.newco]
sha256 = "{_digest("newco-only")}"
accounts = ["newco"]
"""


def new(name: str = "newco", **fields: Any) -> dict[str, Any]:
    return {"name": name, "client_id": f"{name}-client", "client_secret": SECRET, "environment": "sandbox", **fields}


@pytest.fixture
def make_http(redis_server: Any, prefix: str, served_ingress: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    monkeypatch.setenv("ACME_SECRET", "acme-secret")
    (tmp_path / "accounts.toml").write_text(ACCOUNTS)

    def build(**extra: str) -> tuple[httpx.Client, Any]:
        settings = local_settings(
            redis_server.url,
            prefix,
            BRIDGE_ADMIN_KEYS="admin-key",
            BRIDGE_ACCOUNTS_FILE=str(tmp_path / "accounts.toml"),
            OPTIMUM_ENVIRONMENT="sandbox",
            BRIDGE_VALIDATE_OPERATIONS="off",
            **extra,
        )
        return served_ingress(settings), settings

    return build


def test_an_admin_creates_changes_and_removes_an_account(make_http: Any, redis_server: Any, prefix: str) -> None:
    http, settings = make_http(BRIDGE_SECRETS_KEY=KEY)
    created = http.post("/v1/accounts", json=new(rate_limit="20/m"), headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["source"] == "api" and body["rate_limit"] == "20/m" and body["client_id"] == "newco-client"
    assert body["secret_fingerprint"] == hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    assert SECRET not in created.text
    assert problem_of(http.post("/v1/accounts", json=new(), headers=ADMIN), 409)["detail"].startswith(
        "account 'newco' exists"
    )
    producer = BridgeClient(settings)
    job = producer.submit({"method": "GET", "path": "/Vehicles", "account": "newco"})  # known at once
    changed = http.patch("/v1/accounts/newco", json={"client_secret": ROTATED, "rate_limit": "10/s"}, headers=ADMIN)
    assert changed.status_code == 200, changed.text
    assert changed.json()["secret_fingerprint"] == hashlib.sha256(ROTATED.encode()).hexdigest()[:8]
    assert changed.json()["rate_limit"] == "10/s"
    listed = http.get("/v1/accounts", headers=ADMIN).json()
    assert [(a["name"], a["source"]) for a in listed["accounts"]] == [
        ("acme", "file"),
        ("default", "file"),
        ("newco", "api"),
    ]
    removed = http.delete("/v1/accounts/newco", headers=ADMIN)
    assert removed.status_code == 200 and removed.json() == {"name": "newco", "cancelled_jobs": 1}
    status = producer.get(job)
    assert status.status == "cancelled" and status.error is not None and status.error.kind == "account_removed"
    with pytest.raises(InvalidOperation, match=r"^account: unknown account 'newco'$"):
        producer.submit({"method": "GET", "path": "/Vehicles", "account": "newco"})
    assert problem_of(http.get("/v1/accounts/newco", headers=ADMIN), 404)["detail"] == "no account with this name"
    producer.close()


def test_only_admin_keys_change_accounts_and_file_accounts_are_read_only(make_http: Any) -> None:
    http, _ = make_http(BRIDGE_SECRETS_KEY=KEY)
    assert problem_of(http.post("/v1/accounts", json=new(), headers=PLAIN), 403)["detail"].startswith(
        "this needs an admin key"
    )
    assert http.post("/v1/accounts", json=new(), headers=ADMIN).status_code == 201
    for method, body in (("PATCH", {"rate_limit": "1/s"}), ("DELETE", None)):
        assert problem_of(http.request(method, "/v1/accounts/newco", json=body, headers=PLAIN), 403)
    for method, body in (("PATCH", {"rate_limit": "1/s"}), ("DELETE", None)):
        refused = problem_of(http.request(method, "/v1/accounts/acme", json=body, headers=ADMIN), 409)
        assert refused["detail"] == "account 'acme' comes from the accounts file: change it there"
    assert problem_of(http.post("/v1/accounts", json=new("acme"), headers=ADMIN), 409)
    acme = http.get("/v1/accounts/acme", headers=PLAIN).json()
    assert acme["source"] == "file" and acme["secret_fingerprint"] == hashlib.sha256(b"acme-secret").hexdigest()[:8]


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        (
            {"environment": None, "api_url": "http://api.example.com", "token_url": "http://id.example.com/t"},
            'api_url: http:// only with environment = "sandbox"',
        ),
        ({"rate_limit": "lots"}, "rate_limit: expected N/s, N/m or N/h with N >= 1, got 'lots'"),
        ({"name": "no spaces"}, "name: "),
        ({"client_secret": ""}, "client_secret: expected 1 to 4096 characters"),
        ({"api_url": "https://api.example.com"}, "token_url: required with api_url"),
        ({"environment": None}, "environment: required, or api_url and token_url"),
        ({"environment": "production", "openapi_url": "http://api.example.com/s.json"}, "openapi_url: http:// only"),
        ({"secret": "x"}, "secret: "),
    ],
)
def test_a_bad_account_is_a_one_line_422_naming_the_field(make_http: Any, fields: dict[str, Any], detail: str) -> None:
    http, _ = make_http(BRIDGE_SECRETS_KEY=KEY)
    refused = problem_of(http.post("/v1/accounts", json={**new(), **fields}, headers=ADMIN), 422)
    assert refused["detail"].startswith(detail), refused
    assert detail.startswith(refused["errors"][0]["field"] + ": "), "the error names the field"


def test_a_changed_document_url_follows_the_rules_of_the_account(make_http: Any) -> None:
    """The token goes with the document's fetch on the API's host: plain http only for a sandbox account."""
    http, _ = make_http(BRIDGE_SECRETS_KEY=KEY)
    assert http.post("/v1/accounts", json=new("prod", environment="production"), headers=ADMIN).status_code == 201
    change = {"openapi_url": "http://api.optimum-automotive.com/swagger.json"}
    refused = problem_of(http.patch("/v1/accounts/prod", json=change, headers=ADMIN), 422)
    assert refused["detail"].startswith('openapi_url: http:// only with environment = "sandbox"'), refused
    assert http.get("/v1/accounts/prod", headers=ADMIN).json()["openapi_url"] is None, "nothing was changed"
    assert http.post("/v1/accounts", json=new("play"), headers=ADMIN).status_code == 201
    assert http.patch("/v1/accounts/play", json=change, headers=ADMIN).status_code == 200, "a sandbox account may"
    assert SECRET not in str(refused)


def test_without_a_secrets_key_creating_says_to_set_it(make_http: Any) -> None:
    http, _ = make_http()
    refused = problem_of(http.post("/v1/accounts", json=new(), headers=ADMIN), 409)
    assert refused["detail"].startswith("BRIDGE_SECRETS_KEY: set it")
    assert http.get("/v1/accounts", headers=ADMIN).json()["accounts"][0]["name"] == "acme"


def test_a_limited_key_sees_its_accounts_only_even_those_created_later(make_http: Any) -> None:
    http, _ = make_http(BRIDGE_SECRETS_KEY=KEY)
    assert problem_of(http.get("/v1/accounts/newco", headers=LIMITED), 404)  # named by the key, not yet there
    assert http.get("/v1/accounts", headers=LIMITED).json() == {"accounts": [], "next_cursor": None}
    assert http.post("/v1/accounts", json=new(), headers=ADMIN).status_code == 201
    assert http.post("/v1/accounts", json=new("other"), headers=ADMIN).status_code == 201
    assert http.get("/v1/accounts/newco", headers=LIMITED).json()["name"] == "newco"
    other = problem_of(http.get("/v1/accounts/other", headers=LIMITED), 404)
    assert other["detail"] == problem_of(http.get("/v1/accounts/nobody", headers=LIMITED), 404)["detail"]
    assert problem_of(http.get("/v1/accounts/acme", headers=LIMITED), 404)
    assert [a["name"] for a in http.get("/v1/accounts", headers=LIMITED).json()["accounts"]] == ["newco"]
    submitted = http.post(
        "/v1/operations", json={"method": "GET", "path": "/Vehicles", "account": "newco"}, headers=LIMITED
    )
    assert submitted.status_code == 202, submitted.text
    refused = http.post(
        "/v1/operations", json={"method": "GET", "path": "/Vehicles", "account": "other"}, headers=LIMITED
    )
    assert problem_of(refused, 422)["detail"] == "account: unknown account 'other'"


def test_accounts_are_paged_by_name(make_http: Any) -> None:
    http, _ = make_http(BRIDGE_SECRETS_KEY=KEY)
    for i in range(7):
        assert http.post("/v1/accounts", json=new(f"c{i}"), headers=ADMIN).status_code == 201
    names: list[str] = []
    cursor = ""
    while True:
        page = http.get("/v1/accounts", params={"cursor": cursor, "limit": 3}, headers=ADMIN).json()
        names += [a["name"] for a in page["accounts"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert names == ["acme", *(f"c{i}" for i in range(7)), "default"]


def test_secrets_are_never_in_redis_in_clear_and_rekey_keeps_them_readable(
    make_http: Any, redis_server: Any, prefix: str
) -> None:
    http, settings = make_http(BRIDGE_SECRETS_KEY=KEY)
    assert http.post("/v1/accounts", json=new(), headers=ADMIN).status_code == 201
    assert http.patch("/v1/accounts/newco", json={"client_secret": ROTATED}, headers=ADMIN).status_code == 200
    client = redis_server.client()
    dump = redis_dump(client, prefix)
    assert "newco" in dump and SECRET not in dump and ROTATED not in dump
    newer = Fernet.generate_key().decode()
    keys = Keys(prefix)
    rotated = AccountStore(
        client, keys, file=settings.accounts, cipher=SecretsCipher(_secret(f"{newer},{KEY}")), sandbox_url=""
    )
    assert rotated.rekey() == 1
    only_new = AccountStore(client, keys, file=settings.accounts, cipher=SecretsCipher(_secret(newer)), sandbox_url="")
    registry = AccountRegistry(only_new)
    assert registry.load(strict=True) == 1
    account = registry.get("newco")
    assert account is not None and account.client_secret is not None
    assert account.client_secret.get_secret_value() == ROTATED
    assert "ROTATED" not in repr(account) and ROTATED not in repr(account) and ROTATED not in repr(settings)
    assert ROTATED not in redis_dump(client, prefix)


def test_rekey_keeps_a_rotation_made_between_its_read_and_its_write(
    make_http: Any, redis_server: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    http, settings = make_http(BRIDGE_SECRETS_KEY=KEY)
    assert http.post("/v1/accounts", json=new(), headers=ADMIN).status_code == 201
    client = redis_server.client()
    newer = Fernet.generate_key().decode()
    cipher = SecretsCipher(_secret(f"{newer},{KEY}"))
    store = AccountStore(client, Keys(prefix), file=settings.accounts, cipher=cipher, sandbox_url="")
    reencrypt = cipher.rotate

    def rotated_meanwhile(stored: str, *, account: str) -> str:  # rekey has read the record: a PATCH lands now
        assert http.patch("/v1/accounts/newco", json={"client_secret": ROTATED}, headers=ADMIN).status_code == 200
        return reencrypt(stored, account=account)

    monkeypatch.setattr(cipher, "rotate", rotated_meanwhile)
    assert store.rekey() == 0  # nothing re-encrypted: the record changed under it
    account = AccountRegistry(store)
    assert account.load(strict=True) == 1
    found = account.get("newco")
    assert found is not None and found.client_secret is not None
    assert found.client_secret.get_secret_value() == ROTATED
    assert (
        store.view("newco").secret_fingerprint
        == http.get("/v1/accounts/newco", headers=ADMIN).json()["secret_fingerprint"]
    )


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


def test_the_dashboard_pages_runtime_accounts_with_work_first_and_filters_by_name(make_http: Any) -> None:
    http, settings = make_http(BRIDGE_SECRETS_KEY=KEY)
    for name in ("alpha", "bravo", "charlie", "zulu"):
        assert http.post("/v1/accounts", json=new(name), headers=ADMIN).status_code == 201
    producer = BridgeClient(settings)
    producer.submit({"method": "GET", "path": "/Vehicles", "account": "zulu"})  # no worker: it waits
    page = http.get("/ui", auth=("", "admin-key"))
    assert page.status_code == 200, page.text
    table = page.text[page.text.index('id="runtime-accounts"') :]
    order = [name for name in ("zulu", "alpha", "bravo", "charlie") if f'data-account="{name}"' in table]
    assert order == ["zulu", "alpha", "bravo", "charlie"]
    assert table.index('data-account="zulu"') < table.index('data-account="alpha"')  # with work first
    assert SECRET not in page.text
    filtered = http.get("/ui", params={"accounts_filter": "br"}, auth=("", "admin-key")).text
    assert 'data-account="bravo"' in filtered and 'data-account="alpha"' not in filtered
    limited = http.get("/ui", auth=("", "newco-only")).text
    assert 'data-account="alpha"' not in limited
    producer.close()


def test_a_schedule_may_name_an_account_created_at_runtime(make_http: Any) -> None:
    http, _ = make_http(BRIDGE_SECRETS_KEY=KEY)
    hourly = {"every": "1h", "account": "newco", "operations": [{"method": "GET", "path": "/Vehicles"}]}
    refused = problem_of(http.put("/v1/schedules/hourly", json=hourly, headers=ADMIN), 422)
    assert refused["detail"] == "account: unknown account 'newco'"
    assert http.post("/v1/accounts", json=new(), headers=ADMIN).status_code == 201
    assert http.put("/v1/schedules/hourly", json=hourly, headers=ADMIN).status_code == 201
