"""Several Optimum accounts on one bridge (spec §12): each its own token and quota, none slowing another."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import httpx
import pytest

from optimum_bridge import BridgeClient, InvalidOperation
from optimum_bridge.errors import ConfigError
from optimum_bridge.ingress.health import render_metrics
from optimum_bridge.keys import Keys
from optimum_bridge.sandbox.fleet import generate_fleet
from optimum_bridge.settings import Settings
from tests.support import bridge_env, run_cli, settings_from, wait_finished

PLATES = generate_fleet(42, 60).plates()
CLIENTS = {"acme-client": "acme-s3cret-value", "beta-client": "beta-s3cret-value"}


def accounts_file(directory: Path, sandbox_url: str, *, rate: str = "3/s") -> Path:
    path = directory / "accounts.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [accounts.acme]
            client_id = "acme-client"
            client_secret_env = "ACME_SECRET"
            environment = "sandbox"
            api_url = "{sandbox_url}"
            token_url = "{sandbox_url}/connect/token"
            rate_limit = "{rate}"

            [accounts.beta]
            client_id = "beta-client"
            client_secret_env = "BETA_SECRET"
            environment = "sandbox"
            api_url = "{sandbox_url}"
            token_url = "{sandbox_url}/connect/token"
            rate_limit = "{rate}"
            """
        )
    )
    return path


def two_accounts_env(redis_url: str, prefix: str, sb, directory: Path) -> dict[str, str]:
    return bridge_env(
        redis_url,
        prefix,
        sb,
        BRIDGE_ACCOUNTS_FILE=str(accounts_file(directory, sb.url)),
        BRIDGE_RATE_LIMIT_MARGIN_S="0.1",
        ACME_SECRET=CLIENTS["acme-client"],
        BETA_SECRET=CLIENTS["beta-client"],
    )


def vehicle(i: int, account: str) -> dict[str, object]:
    return {"method": "GET", "path": f"/Vehicles/{PLATES[i % len(PLATES)]}", "account": account}


def test_accounts_never_slow_each_other(redis_server, prefix, sandbox, workers, tmp_path):
    sb = sandbox(quota=None, clients=CLIENTS, client_quotas={"acme-client": "3/s", "beta-client": "3/s"})
    env = two_accounts_env(redis_server.url, prefix, sb, tmp_path)
    workers(env, concurrency=4)
    workers(env, concurrency=4)
    client = BridgeClient(settings_from(env))
    a_jobs = client.submit_many([vehicle(i, "acme") for i in range(45)])
    b_jobs = client.submit_many([vehicle(i, "beta") for i in range(15)])
    b_submitted = time.monotonic()
    wait_finished(client, b_jobs, timeout=60)
    b_took = time.monotonic() - b_submitted
    a_left = sum(1 for i in a_jobs if not client.get(i).finished)
    wait_finished(client, a_jobs, timeout=90)
    stats = sb.stats()["by_client"]
    print(f"\n45 on acme, then 15 on beta, 3/s each: beta done in {b_took:.1f}s, {a_left} acme jobs left; {stats}")
    assert all(client.get(i).status == "succeeded" for i in a_jobs + b_jobs)
    assert a_left >= 10  # beta ran beside acme's backlog, not after it
    assert b_took <= 15 / 3 * 1.1 + 3  # at its own quota
    metrics = render_metrics(redis_server.client(), Keys(prefix), ["acme", "beta"]).decode()
    assert 'optimum_bridge_account_api_calls_total{account="acme",status="200"} 45.0' in metrics
    assert 'optimum_bridge_account_api_calls_total{account="beta",status="200"} 15.0' in metrics
    assert 'optimum_bridge_account_token_requests_total{account="beta"} 1.0' in metrics
    for client_id, accepted in (("acme-client", 45), ("beta-client", 15)):
        assert stats[client_id]["accepted"] == accepted  # every call carried its own account's token
        assert stats[client_id]["token_requests"] == 1
        assert stats[client_id]["rate_limited"] == 0
        assert stats[client_id]["max_in_window"] <= 3


def test_an_unknown_account_is_refused_at_submission(redis_server, prefix, sandbox, tmp_path):
    sb = sandbox(quota=None)
    env = two_accounts_env(redis_server.url, prefix, sb, tmp_path)
    client = BridgeClient(settings_from(env))
    with pytest.raises(InvalidOperation, match=r"^operations\[1\]\.account: unknown account 'gamma'$"):
        client.submit_many([vehicle(0, "acme"), vehicle(1, "gamma")])
    assert list(redis_server.client().scan_iter(match=f"{prefix}*")) == []


@pytest.mark.parametrize(
    ("content", "env", "expected"),
    [
        (
            '[accounts.acme]\nclient_id = "a"\nclient_secret_env = "ACME_SECRET"\nenvironment = "preprod"\n',
            {},
            "BRIDGE_ACCOUNTS_FILE: accounts.acme.client_secret_env: ACME_SECRET is not set",
        ),
        (
            '[accounts.acme]\nclient_id = "a"\nclient_secret_env = "S"\n',
            {"S": "x"},
            "BRIDGE_ACCOUNTS_FILE: accounts.acme.environment: required, or api_url and token_url",
        ),
        (
            '[accounts.acme]\nclient_id = "a"\nclient_secret_env = "S"\nenvironment = "preprod"\nrate_limit = "lots"\n',
            {"S": "x"},
            "BRIDGE_ACCOUNTS_FILE: accounts.acme.rate_limit: expected N/s, N/m or N/h with N >= 1, got 'lots'",
        ),
        (
            '[accounts.acme]\nclient_id = "a"\nclient_secret = "in-the-file"\nenvironment = "preprod"\n',
            {},
            "BRIDGE_ACCOUNTS_FILE: accounts.acme.client_secret_env: Field required",
        ),
        ("[accounts.acme\n", {}, "BRIDGE_ACCOUNTS_FILE: not valid TOML"),
    ],
)
def test_a_wrong_accounts_file_is_one_line_naming_the_account_and_the_field(tmp_path, content, env, expected):
    path = tmp_path / "accounts.toml"
    path.write_text(content)
    settings = Settings(_env_file=None, BRIDGE_ACCOUNTS_FILE=str(path))  # type: ignore[call-arg]
    with pytest.raises(ConfigError) as refused:
        settings.load_accounts(env)
    assert str(refused.value).startswith(expected) and "\n" not in str(refused.value)
    assert "in-the-file" not in str(refused.value)


@pytest.mark.processes
def test_a_wrong_accounts_file_stops_the_worker_at_start_in_one_line(tmp_path):
    path = tmp_path / "accounts.toml"
    path.write_text('[accounts.acme]\nclient_id = "a"\nclient_secret_env = "ACME_SECRET"\nenvironment = "preprod"\n')
    env = {"PATH": "/usr/bin:/bin", "BRIDGE_ACCOUNTS_FILE": str(path), "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = run_cli(env, "worker")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "optimum-bridge: configuration error: BRIDGE_ACCOUNTS_FILE: accounts.acme.client_secret_env: "
        "ACME_SECRET is not set"
    ]


BETA_KEY = "ingress-key-of-beta-only-0123456789"


def scoped_ingress(redis_url: str, prefix: str, sb, directory: Path):
    """An in-process ingress whose accounts file has a key limited to account beta."""
    import hashlib

    from tests.system.test_ingress import InProcess

    env = {**two_accounts_env(redis_url, prefix, sb, directory), "BRIDGE_API_KEYS": "every-account-key-0123456789"}
    path = Path(env["BRIDGE_ACCOUNTS_FILE"])
    digest = hashlib.sha256(BETA_KEY.encode()).hexdigest()
    path.write_text(path.read_text() + f'\n[api_keys.erp]\nsha256 = "{digest}"\naccounts = ["beta"]\n')
    settings = settings_from(env)
    from optimum_bridge.ingress import create_app

    return httpx.Client(transport=InProcess(create_app(settings)), base_url="http://ingress.test"), settings


def test_a_key_limited_to_an_account_sees_and_submits_to_that_account_only(redis_server, prefix, sandbox, tmp_path):
    sb = sandbox(quota=None)
    http, settings = scoped_ingress(redis_server.url, prefix, sb, tmp_path)
    beta = {"Authorization": f"Bearer {BETA_KEY}"}
    every = {"Authorization": "Bearer every-account-key-0123456789"}
    with http:
        producer = BridgeClient(settings)
        a_job = producer.submit(vehicle(0, "acme"))
        a_batch = producer.submit_batch([vehicle(1, "acme")]).id
        answer = http.post("/v1/operations", json=vehicle(2, "beta"), headers=beta)
        assert answer.status_code == 202, answer.text
        b_job = answer.json()["id"]
        b_batch = http.post("/v1/batches", json={"operations": [vehicle(3, "beta")]}, headers=beta).json()["id"]
        unknown = http.get("/v1/operations/0123456789abcdef", headers=beta)
        hidden = http.get(f"/v1/operations/{a_job}", headers=beta)
        assert unknown.status_code == hidden.status_code == 404
        assert unknown.json()["detail"] == hidden.json()["detail"]  # exactly as an unknown id
        assert http.get(f"/v1/batches/{a_batch}", headers=beta).status_code == 404
        assert http.get(f"/v1/operations/{b_job}", headers=beta).json()["account"] == "beta"
        assert http.get(f"/v1/batches/{b_batch}", headers=beta).status_code == 200
        assert http.get(f"/v1/operations/{a_job}", headers=every).status_code == 200  # BRIDGE_API_KEYS: every one
        refused = http.post("/v1/operations", json=vehicle(4, "acme"), headers=beta)
        assert refused.status_code == 422 and refused.json()["detail"] == "account: unknown account 'acme'"
        batch = http.post("/v1/batches", json={"operations": [vehicle(5, "beta"), vehicle(6, "acme")]}, headers=beta)
        assert batch.status_code == 422 and batch.json()["detail"].startswith("operations[1].account: unknown account")
        many = http.post("/v1/operations:batch", json={"operations": [vehicle(7, "acme")]}, headers=beta)
        assert many.status_code == 422
    counted = [k for k in redis_server.client().scan_iter(match=f"{prefix}job:*")]
    assert len(counted) == 4  # the refused submissions wrote nothing
