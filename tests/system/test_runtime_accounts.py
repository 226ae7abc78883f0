"""Accounts at runtime (spec §12a) with real workers, real HTTP and the sandbox with several clients:
an account created over HTTP is served without a restart, a rotation drops its token (one new token
request), a removal cancels its waiting jobs with callbacks and lets the call under way finish, and a
wrong ``BRIDGE_SECRETS_KEY`` stops a worker at start in one line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from optimum_bridge import BridgeClient, InvalidOperation
from optimum_bridge.accounts.cipher import SecretsCipher
from optimum_bridge.accounts.model import NewAccount
from optimum_bridge.accounts.store import AccountStore
from optimum_bridge.ingress import create_app
from optimum_bridge.keys import Keys
from tests.support import ROOT, bridge_env, run_cli, settings_from, wait_finished, wait_until
from tests.system.test_ingress import InProcess

KEY = Fernet.generate_key().decode()
ADMIN_KEY = "admin-key-for-runtime-accounts"
PLAIN_KEY = "plain-key-for-runtime-accounts"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
PLAIN = {"Authorization": f"Bearer {PLAIN_KEY}"}
FIRST = "n3wco-first-s3cret"
SECOND = "n3wco-second-s3cret"


def newco(sb: Any, **fields: Any) -> dict[str, Any]:
    return {
        "name": "newco",
        "client_id": "newco-client",
        "client_secret": FIRST,
        "environment": "sandbox",
        "api_url": sb.url,
        "token_url": sb.token_url,
        "rate_limit": "5/s",
        **fields,
    }


def stack(redis_server: Any, prefix: str, sb: Any) -> tuple[dict[str, str], httpx.Client, BridgeClient]:
    env = bridge_env(
        redis_server.url,
        prefix,
        sb,
        BRIDGE_SECRETS_KEY=KEY,
        BRIDGE_ADMIN_KEYS=ADMIN_KEY,
        BRIDGE_API_KEYS=PLAIN_KEY,
        BRIDGE_VALIDATE_OPERATIONS="off",
    )
    settings = settings_from(env)
    http = httpx.Client(transport=InProcess(create_app(settings)), base_url="http://ingress.test")
    return env, http, BridgeClient(settings)


def vehicles(**extra: Any) -> dict[str, Any]:
    return {"method": "GET", "path": "/Vehicles", "account": "newco", "coalesce": False, **extra}


def test_an_account_created_at_runtime_is_served_then_rotated_without_a_restart(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota=None, clients={"sandbox-client": "sandbox-secret", "newco-client": FIRST})
    env, http, client = stack(redis_server, prefix, sb)
    workers(env, concurrency=2)
    workers(env, concurrency=2)
    created_at = time.monotonic()
    created = http.post("/v1/accounts", json=newco(sb), headers=ADMIN)
    assert created.status_code == 201, created.text
    answer = http.post("/v1/operations", json=vehicles(), headers=PLAIN)
    assert answer.status_code == 202, answer.text
    status = client.wait(answer.json()["id"], timeout=30)
    took = time.monotonic() - created_at
    print(f"\ncreated over HTTP, first job of the account done {took:.2f}s later")
    assert status.status == "succeeded"
    assert took < 10  # spec: served within 2 s; loose on a loaded 2-core machine
    stats = sb.stats()["by_client"]["newco-client"]
    assert stats["accepted"] == 1 and stats["token_requests"] == 1

    redis = redis_server.client()
    token_key = Keys(prefix).token("newco")
    assert redis.exists(token_key) == 1
    sb.state.config.clients["newco-client"] = SECOND  # the customer rotated its secret: the first one is refused
    rotated = http.patch("/v1/accounts/newco", json={"client_secret": SECOND}, headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    assert redis.exists(token_key) == 0  # the old token dropped with the change
    jobs = client.submit_many([vehicles() for _ in range(4)])
    wait_finished(client, jobs, timeout=60)
    assert [client.get(job).status for job in jobs] == ["succeeded"] * 4
    stats = sb.stats()["by_client"]["newco-client"]
    assert stats["accepted"] == 5
    assert stats["token_requests"] == 2  # exactly one after the rotation, with the new secret
    assert sb.stats()["token_failures"] == 0
    client.close()


def test_removing_an_account_cancels_its_waiting_jobs_and_lets_its_call_finish(
    redis_server, prefix, sandbox, workers, receiver
):
    sb = sandbox(quota=None, clients={"sandbox-client": "sandbox-secret", "newco-client": FIRST}, latency_ms=1500)
    env, http, client = stack(redis_server, prefix, sb)
    workers(env, concurrency=2)
    assert http.post("/v1/accounts", json=newco(sb, rate_limit="1/m"), headers=ADMIN).status_code == 201
    jobs = client.submit_many([vehicles(callback={"url": receiver.url}) for _ in range(4)])
    wait_until(lambda: client.get(jobs[0]).status == "running", what="the first call under way")
    waiting = client.get(jobs[3])
    assert waiting.position == 2 and waiting.estimated_start_at is not None  # forecast from the stored quota
    removed = http.delete("/v1/accounts/newco", headers=ADMIN)
    assert removed.status_code == 200 and removed.json() == {"name": "newco", "cancelled_jobs": 3}
    assert client.wait(jobs[0], timeout=30).status == "succeeded"  # the call under way finished
    for job in jobs[1:]:
        status = client.get(job)
        assert status.status == "cancelled" and status.attempts == 0
        assert status.error is not None and status.error.kind == "account_removed"
    wait_until(lambda: len(receiver.received) >= 4, what="the four callbacks")
    kinds = sorted(json.loads(r.body)["type"] for r in receiver.received)
    assert kinds == ["operation.cancelled"] * 3 + ["operation.succeeded"]
    with pytest.raises(InvalidOperation, match=r"^account: unknown account 'newco'$"):
        client.submit(vehicles())
    refused = http.post("/v1/operations", json=vehicles(), headers=PLAIN)
    assert refused.status_code == 422 and refused.json()["detail"] == "account: unknown account 'newco'"
    calls = sb.stats()["by_client"]["newco-client"]["accepted"]
    time.sleep(2.5)  # observing that nothing happens: no worker calls for it any more
    assert sb.stats()["by_client"]["newco-client"]["accepted"] == calls == 1
    client.close()


@pytest.mark.processes
def test_a_wrong_secrets_key_stops_the_worker_at_start_in_one_line(redis_server, prefix, sandbox):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_SECRETS_KEY=KEY)
    settings = settings_from(env)
    store = AccountStore(
        redis_server.client(),
        Keys(prefix),
        file=settings.accounts,
        cipher=SecretsCipher(SecretStr(KEY)),
        sandbox_url=sb.url,
    )
    store.create(NewAccount.model_validate(newco(sb)))
    result = run_cli({**env, "BRIDGE_SECRETS_KEY": Fernet.generate_key().decode()}, "worker")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "optimum-bridge: configuration error: BRIDGE_SECRETS_KEY: cannot decrypt the secret of account 'newco' "
        "(not the key it was stored with)"
    ]
    without = {k: v for k, v in env.items() if k != "BRIDGE_SECRETS_KEY"}
    result = run_cli(without, "worker")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "optimum-bridge: configuration error: BRIDGE_SECRETS_KEY: not set, and account 'newco' is stored in Redis"
    ]


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optimum_bridge.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.processes
def test_the_accounts_commands_add_rotate_change_remove_and_rekey(redis_server, prefix, sandbox):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_SECRETS_KEY=KEY)
    added = cli(
        env, "accounts", "add", "newco", "--client-id", "newco-client", "--secret-stdin", "--environment", "sandbox",
        "--rate-limit", "20/m", stdin=FIRST + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("newco (api): client newco-client, 20/m,") and FIRST not in added.stdout
    listed = cli(env, "accounts", "list")
    assert [line.split(" ")[0] for line in listed.stdout.splitlines()] == ["default", "newco"]
    shown = json.loads(cli(env, "accounts", "show", "newco").stdout)
    assert shown["secret_fingerprint"] == hashlib.sha256(FIRST.encode()).hexdigest()[:8]
    rotated = cli(env, "accounts", "rotate", "newco", "--secret-stdin", stdin=SECOND + "\n")
    assert rotated.returncode == 0 and hashlib.sha256(SECOND.encode()).hexdigest()[:8] in rotated.stdout
    assert "5/s" in cli(env, "accounts", "set", "newco", "--rate-limit", "5/s").stdout
    bad = cli(env, "accounts", "set", "newco", "--rate-limit", "lots")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "optimum-bridge: rate_limit: expected N/s, N/m or N/h with N >= 1, got 'lots'"
    read_only = cli(env, "accounts", "remove", "default")
    assert read_only.returncode == 1 and "comes from the accounts file" in read_only.stderr
    newer = Fernet.generate_key().decode()
    rekeyed = cli({**env, "BRIDGE_SECRETS_KEY": f"{newer},{KEY}"}, "accounts", "rekey")
    assert rekeyed.stdout.strip() == "1 account secret(s) encrypted with the first key"
    assert cli({**env, "BRIDGE_SECRETS_KEY": newer}, "accounts", "show", "newco").returncode == 0
    removed = cli({**env, "BRIDGE_SECRETS_KEY": newer}, "accounts", "remove", "newco")
    assert removed.stdout.strip() == "newco: removed; 0 waiting job(s) cancelled"
    missing = cli(env, "accounts", "show", "newco")
    assert missing.returncode == 1 and missing.stderr.strip() == "optimum-bridge: no account 'newco'"
    assert FIRST not in redis_server.client().dump(Keys(prefix).accounts_changes).decode(errors="replace")


def test_a_prefork_pool_serves_an_account_created_after_its_children_forked(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota=None, clients={"sandbox-client": "sandbox-secret", "newco-client": FIRST})
    env, http, client = stack(redis_server, prefix, sb)
    workers(env, concurrency=2, pool="prefork")
    warm = client.submit({"method": "GET", "path": "/Vehicles"})  # the children are up and have run a job
    assert client.wait(warm, timeout=60).status == "succeeded"
    assert http.post("/v1/accounts", json=newco(sb), headers=ADMIN).status_code == 201
    jobs = client.submit_many([vehicles() for _ in range(3)])
    wait_finished(client, jobs, timeout=60)
    assert [client.get(job).status for job in jobs] == ["succeeded"] * 3
    assert sb.stats()["by_client"]["newco-client"]["token_requests"] == 1
    client.close()
