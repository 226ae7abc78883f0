"""No secret leaks: not in logs, Redis, callbacks, job records or Sentry events.

A real worker runs with DEBUG logs, Sentry pointed at a local stub that
records every envelope, token encryption at rest, a revoked token (the 401
path), a failing call and a dead-lettered callback (both log errors, which
Sentry turns into events). Then every log line, every Redis key, every
callback and every Sentry envelope is searched for each secret.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography.fernet import Fernet

from optimum_bridge import BridgeClient
from optimum_bridge.ingress import create_app
from tests.support import CALLBACK_SECRET, ROOT, bridge_env, redis_dump, settings_from, wait_until
from tests.support.forward_proxy import ForwardProxy
from tests.system.test_ingress import InProcess

CLIENT_SECRET = "cl13nt-s3cr3t-for-the-leak-test"
SECOND_SECRET = "s3cond-acc0unt-s3cr3t-for-the-leak-test"
RUNTIME_SECRET = "runt1me-acc0unt-s3cr3t-for-the-leak-test"
ROTATED_SECRET = "r0tated-runt1me-s3cr3t-for-the-leak-test"
ADMIN_KEY = "admin-api-key-for-the-leak-test"
API_KEY = "ingress-api-key-for-the-leak-test"
PROXY_PASSWORD = "pr0xy-p4ssw0rd-for-the-leak-test"


class SentryStub:
    """A local HTTP endpoint standing in for Sentry's ingestion: records envelopes."""

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                stub.envelopes.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sentry_stub():
    stub = SentryStub()
    yield stub
    stub.close()


@pytest.fixture
def proxy():
    forward = ForwardProxy()
    yield forward
    forward.close()


def test_no_secret_anywhere_after_a_run(redis_server, prefix, sandbox, workers, receiver, sentry_stub, tmp_path, proxy):
    clients = {"leak-client": CLIENT_SECRET, "second-client": SECOND_SECRET, "runtime-client": RUNTIME_SECRET}
    sb = sandbox(quota=None, clients=clients)
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        f'[accounts.second]\nclient_id = "second-client"\nclient_secret_env = "SECOND_SECRET"\n'
        f'environment = "sandbox"\napi_url = "{sb.url}"\ntoken_url = "{sb.token_url}"\nrate_limit = "10/s"\n'
    )
    issued: list[str] = []
    original = sb.state.issue_token

    def recording(client_id: str) -> tuple[str, int]:
        token, lifetime = original(client_id)
        issued.append(token)
        return token, lifetime

    sb.state.issue_token = recording  # type: ignore[method-assign]
    encryption_key = Fernet.generate_key().decode()
    secrets_key = Fernet.generate_key().decode()
    env = bridge_env(
        redis_server.url,
        prefix,
        sb,
        OPTIMUM_CLIENT_ID="leak-client",
        OPTIMUM_CLIENT_SECRET=CLIENT_SECRET,
        BRIDGE_API_KEYS=API_KEY,
        BRIDGE_ADMIN_KEYS=ADMIN_KEY,
        BRIDGE_SECRETS_KEY=secrets_key,
        BRIDGE_TOKEN_ENCRYPTION_KEY=encryption_key,
        SENTRY_DSN=sentry_stub.dsn,
        BRIDGE_LOG_LEVEL="DEBUG",
        BRIDGE_CALLBACK_SCHEDULE_S="0.1",
        BRIDGE_ACCOUNTS_FILE=str(accounts),
        SECOND_SECRET=SECOND_SECRET,
        OPTIMUM_PROXY_URL=proxy.url.replace("://", f"://bridge:{PROXY_PASSWORD}@"),
        BRIDGE_CALLBACK_PROXY_URL=proxy.url.replace("://", f"://bridge:{PROXY_PASSWORD}@"),
    )
    worker = workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    http = httpx.Client(transport=InProcess(create_app(settings_from(env))), base_url="http://ingress.test")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    runtime_account = {
        "name": "third",
        "client_id": "runtime-client",
        "client_secret": RUNTIME_SECRET,
        "environment": "sandbox",
        "api_url": sb.url,
        "token_url": sb.token_url,
        "rate_limit": "10/s",
    }
    created = http.post("/v1/accounts", json=runtime_account, headers=admin)  # spec §12a: at runtime
    assert created.status_code == 201, created.text
    receiver.statuses = [500, 500]  # the first callback is dead-lettered (an error log, so a Sentry event)
    first = client.submit_many(
        [
            {"method": "GET", "path": "/Vehicles", "callback": {"url": receiver.url}},
            {"method": "GET", "path": "/Vehicles/ZZ-000-ZZ"},
            {"method": "GET", "path": "/Persons", "account": "second"},
            {"method": "GET", "path": "/Persons", "account": "third"},
        ]
    )
    for job_id in first:
        client.wait(job_id, timeout=30)
    wait_until(lambda: redis_server.client().hlen(f"{prefix}deadletters") == 1, what="the dead letter")
    sb.revoke()  # the next call meets a 401: invalidate, refresh, retry
    sb.state.config.clients["runtime-client"] = ROTATED_SECRET
    rotated = http.patch("/v1/accounts/third", json={"client_secret": ROTATED_SECRET}, headers=admin)
    assert rotated.status_code == 200, rotated.text
    second = client.submit_many(
        [
            {"method": "GET", "path": "/Persons", "callback": {"url": receiver.url}},
            {"method": "GET", "path": "/Vehicles", "account": "third", "callback": {"url": receiver.url}},
        ]
    )
    for job_id in second:
        client.wait(job_id, timeout=30)
    wait_until(lambda: receiver.received, what="the second callback")
    wait_until(lambda: sentry_stub.envelopes, timeout=30, what="a Sentry event from the dead letter")

    assert len(issued) == 5 and sb.stats()["unauthorized"] >= 1  # default's two, second's, third's two
    assert client.get(first[2]).status == client.get(first[3]).status == client.get(second[1]).status == "succeeded"
    secrets = {
        "client secret": CLIENT_SECRET,
        "second account's secret": SECOND_SECRET,
        "runtime account's secret": RUNTIME_SECRET,
        "runtime account's rotated secret": ROTATED_SECRET,
        "secrets key": secrets_key,
        "admin key": ADMIN_KEY,
        "callback secret": CALLBACK_SECRET,
        "api key": API_KEY,
        "encryption key": encryption_key,
        "proxy password": PROXY_PASSWORD,
    } | {f"token {i}": token for i, token in enumerate(issued)}
    worker.stop()
    places = {
        "worker log": worker.log(),
        "redis": redis_dump(redis_server.client(), prefix),
        "callbacks": "\n".join(r.body.decode() + json.dumps(r.headers) for r in receiver.received),
        "job records": "\n".join(client.get(i).model_dump_json() for i in first + second),
        "sentry": "\n".join(e.decode(errors="replace") for e in sentry_stub.envelopes),
        "settings repr": repr(client.settings),
        "accounts api": http.get("/v1/accounts", headers=admin).text
        + http.get("/v1/accounts/third", headers=admin).text,
        "metrics": http.get("/metrics").text,
        "ui": http.get("/ui", auth=("", ADMIN_KEY)).text,
    }
    leaks = [
        f"{name} in {place}" for name, secret in secrets.items() for place, text in places.items() if secret in text
    ]
    print(
        f"\nsearched {sum(len(t) for t in places.values())} characters in {len(places)} places "
        f"({len(sentry_stub.envelopes)} Sentry envelopes) for {len(secrets)} secrets: {len(leaks)} found"
    )
    assert "DEBUG" in places["worker log"] and "token" in places["worker log"]
    assert any(line.startswith("POST http") for line in proxy.log)  # the calls and callbacks went through it
    assert leaks == []


SCRUB_SCRIPT = r"""
import json, sys
import sentry_sdk
from sentry_sdk.transport import Transport
from optimum_bridge.process.observability import init_sentry
from optimum_bridge.settings import load_settings

class Capture(Transport):
    def capture_envelope(self, envelope):
        for item in envelope.items:
            sys.stdout.write(item.payload.get_bytes().decode() + "\n")

settings = load_settings(_env_file=None)
init_sentry(settings, component="test", transport=Capture())

def fetch(client_secret, token):
    headers = {"Authorization": f"Bearer {token}"}
    form = {"client_secret": client_secret}
    raise RuntimeError(f"boom with Bearer {token} and {client_secret}")

try:
    fetch(settings.client_secret.get_secret_value(), "tok-abcdef0123456789")
except RuntimeError:
    sentry_sdk.capture_exception()
sentry_sdk.flush()
"""


def test_sentry_events_are_scrubbed_even_with_secrets_in_locals():
    env = {
        "OPTIMUM_CLIENT_ID": "c",
        "OPTIMUM_CLIENT_SECRET": CLIENT_SECRET,
        "SENTRY_DSN": "http://publickey@127.0.0.1:9/1",
        "PATH": "/usr/bin:/bin",
    }
    run = subprocess.run(
        [sys.executable, "-c", SCRUB_SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert "RuntimeError" in run.stdout and "[redacted]" in run.stdout
    assert CLIENT_SECRET not in run.stdout
    assert "tok-abcdef0123456789" not in run.stdout


PROXIED_SCRIPT = """
import sentry_sdk
from optimum_bridge.process.observability import init_sentry
from optimum_bridge.settings import load_settings

init_sentry(load_settings(_env_file=None), component="test")
sentry_sdk.capture_message("hello")
sentry_sdk.flush()
"""


def test_sentry_obeys_no_proxy_variable(sentry_stub, proxy):
    trap = proxy.url  # HTTP_PROXY and HTTPS_PROXY point here: nothing may reach it
    env = {
        "OPTIMUM_CLIENT_ID": "c",
        "OPTIMUM_CLIENT_SECRET": CLIENT_SECRET,
        "SENTRY_DSN": sentry_stub.dsn,
        "HTTP_PROXY": trap,
        "HTTPS_PROXY": trap,
        "http_proxy": trap,
        "PATH": "/usr/bin:/bin",
    }
    run = subprocess.run(
        [sys.executable, "-c", PROXIED_SCRIPT],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    wait_until(lambda: sentry_stub.envelopes, what="the event at the Sentry stub, sent directly")
    assert proxy.log == []
