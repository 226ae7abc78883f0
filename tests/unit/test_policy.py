"""Pure rules, no Redis: retry policy, operation schema, settings, callback URLs, signatures."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from optimum_bridge.callbacks.signing import message_id, sign
from optimum_bridge.callbacks.ssrf import check_callback_url, is_forbidden, literal_address
from optimum_bridge.errors import CallbackURLRefused, ConfigError
from optimum_bridge.jobs.retry import Backoff, classify_status, retry_after, should_retry
from optimum_bridge.process.kombu_worker import retried_errors, retrying_append
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.schemas import Operation, first_error
from optimum_bridge.settings import load_settings
from tests.support import CALLBACK_SECRET


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, "succeeded"),
        (204, "succeeded"),
        (302, "failed"),
        (400, "failed"),
        (401, "failed"),
        (404, "failed"),
        (429, "retry"),
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (504, "retry"),
        (501, "failed"),
    ],
)
def test_classify_status(status, verdict):
    assert classify_status(status) == verdict


def test_backoff_grows_is_capped_and_jittered():
    backoff = Backoff(base_s=5, factor=3, cap_s=100, jitter=0.25)
    rng = random.Random(1)
    delays = [backoff.delay(n, rng=rng) for n in range(1, 8)]
    assert 3.75 <= delays[0] <= 6.25
    assert 11.25 <= delays[1] <= 18.75
    assert all(d <= 125 for d in delays)
    assert delays[-1] >= 75
    assert len({round(backoff.delay(2), 6) for _ in range(20)}) > 1  # jitter spreads retries


def test_retry_after_reads_seconds_and_dates():
    assert retry_after({"retry-after": "7"}, now=0) == 7
    assert retry_after({"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, now=40) == 60
    assert retry_after({"retry-after": "soon"}, now=0) is None
    assert retry_after({}, now=0) is None


def test_should_retry_respects_attempts_and_duration():
    assert should_retry(attempts=1, max_attempts=8, elapsed_s=0, delay_s=5, budget_s=60)
    assert not should_retry(attempts=8, max_attempts=8, elapsed_s=0, delay_s=5, budget_s=60)
    assert not should_retry(attempts=2, max_attempts=8, elapsed_s=58, delay_s=5, budget_s=60)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("Vehicles", "must start with '/'"),
        ("https://evil.example/x", "must start with '/'"),
        ("//evil.example/x", "'//'"),
        ("/\\evil.example", "'//'"),
        ("/a/../b", "'..'"),
        ("/a/%2e%2e/b", "'..'"),
        ("/a/%252e%252e/b", "'..'"),
        ("/a\r\nHost: evil", "control characters"),
        ("/a%0d%0ab", "control characters"),
        ("/a?x=1", "put parameters in 'query'"),
    ],
)
def test_paths_that_could_leak_the_token_are_refused(path, reason):
    with pytest.raises(ValidationError) as refused:
        Operation(method="GET", path=path)
    line = first_error(refused.value)
    assert line.startswith("path: ") and reason in line


def test_a_normal_operation_round_trips():
    op = Operation.model_validate(
        {
            "method": "get",
            "path": "/Geolocation/Trips",
            "query": {"registrationNumber": "EW-266-YQ"},
            "idempotency_key": "k-1",
            "metadata": {"batch": 1},
        }
    )
    assert op.method == "GET" and op.idempotent
    assert Operation.model_validate_json(op.model_dump_json()) == op
    assert not Operation(method="POST", path="/Persons").idempotent


def test_unknown_fields_and_methods_are_named():
    with pytest.raises(ValidationError) as refused:
        Operation.model_validate({"method": "TRACE", "path": "/x"})
    assert first_error(refused.value).startswith("method: ")
    with pytest.raises(ValidationError) as refused:
        Operation.model_validate({"method": "GET", "path": "/x", "callbak": {}})
    assert first_error(refused.value).startswith("callbak: ")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"OPTIMUM_RATE_LIMIT": "30 per minute"}, "OPTIMUM_RATE_LIMIT"),
        ({"OPTIMUM_ENVIRONMENT": "prod"}, "OPTIMUM_ENVIRONMENT"),
        ({"BRIDGE_MAX_ATTEMPTS": "0"}, "BRIDGE_MAX_ATTEMPTS"),
        ({"BRIDGE_CALLBACK_SECRET": "not-a-secret"}, "BRIDGE_CALLBACK_SECRET"),
        ({"BRIDGE_REDIS_URL": "http://localhost"}, "BRIDGE_REDIS_URL"),
        ({"OPTIMUM_TIMEOUT_S": "-1"}, "OPTIMUM_TIMEOUT_S"),
        ({"BRIDGE_CALLBACK_SCHEDULE_S": "5,soon"}, "BRIDGE_CALLBACK_SCHEDULE_S"),
    ],
)
def test_bad_settings_name_the_variable_in_one_line(monkeypatch, env, variable):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None)
    message = str(refused.value)
    assert message.startswith(f"{variable}: ") and "\n" not in message
    if "SECRET" in variable or "URL" in variable:
        assert env[variable] not in message  # a value that may be secret is never echoed


def test_settings_hide_secrets_and_pick_endpoints(monkeypatch):
    monkeypatch.setenv("OPTIMUM_CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("OPTIMUM_CLIENT_ID", "client")
    monkeypatch.setenv("BRIDGE_API_KEYS", "key-one, key-two")
    monkeypatch.setenv("BRIDGE_CALLBACK_SECRET", CALLBACK_SECRET)
    settings = load_settings(_env_file=None)
    assert "s3cr3t" not in repr(settings) and "key-one" not in repr(settings)
    assert CALLBACK_SECRET not in repr(settings)
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-one", "key-two"]
    assert settings.api_url == "https://apicore-preprod.optimum-automotive.com"
    assert settings.rate_limit == RateLimit(30, 60.0)
    monkeypatch.setenv("OPTIMUM_ENVIRONMENT", "production")
    assert load_settings(_env_file=None).token_url == "https://identityserver.optimum-automotive.com/connect/token"


def test_missing_credentials_are_named(monkeypatch):
    monkeypatch.delenv("OPTIMUM_CLIENT_ID", raising=False)
    with pytest.raises(ConfigError, match=r"^OPTIMUM_CLIENT_ID: "):
        load_settings(_env_file=None).require_credentials()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://[fd00:ec2::254]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        "ftp://example.com/",
        "http://user:pw@8.8.8.8/",
    ],
)
def test_callbacks_inside_the_network_are_refused(url):
    with pytest.raises(CallbackURLRefused, match=r"^callback\.url: "):
        check_callback_url(url, allow_private=False)


def test_public_addresses_and_allow_private():
    check_callback_url("https://8.8.8.8/hook", allow_private=False)
    check_callback_url("http://127.0.0.1:9000/hook", allow_private=True)
    assert literal_address("2130706433") is not None and is_forbidden(literal_address("2130706433"))
    assert not is_forbidden(literal_address("1.1.1.1"))


def test_signature_verifies_with_the_standard_webhooks_library():
    from pydantic import SecretStr

    from optimum_bridge.config.values import callback_key

    body = b'{"type":"operation.succeeded"}'
    timestamp = int(__import__("time").time())
    headers = {
        "webhook-id": message_id("job1"),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(callback_key(SecretStr(CALLBACK_SECRET)), message_id("job1"), timestamp, body),
    }
    assert Webhook(CALLBACK_SECRET).verify(body, headers) == {"type": "operation.succeeded"}
    headers["webhook-signature"] = sign(b"another key of 16+ bytes", message_id("job1"), timestamp, body)
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(CALLBACK_SECRET).verify(body, headers)


def test_dns_is_checked_at_delivery_and_the_checked_address_is_the_one_used(monkeypatch):
    import socket

    import httpx

    from optimum_bridge.callbacks.sender import pinned_request
    from optimum_bridge.callbacks.ssrf import resolve_pinned

    answers = {"hooks.example.com": "93.184.216.34"}

    def fake_getaddrinfo(host, port, *args, **kwargs):  # DNS is the edge that cannot run here
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    target = resolve_pinned("https://hooks.example.com:8443/cb?x=1", allow_private=False)
    assert target.address == "93.184.216.34"
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(204)))
    http.send(pinned_request(http, target, content=b"{}", headers={}))
    assert seen[0].url.host == "93.184.216.34" and seen[0].url.port == 8443 and seen[0].url.query == b"x=1"
    assert seen[0].headers["host"] == "hooks.example.com:8443"
    assert seen[0].extensions["sni_hostname"] == "hooks.example.com"

    answers["hooks.example.com"] = "10.0.0.7"  # the name now points inside the network
    with pytest.raises(CallbackURLRefused, match=r"internal address"):
        resolve_pinned("https://hooks.example.com:8443/cb", allow_private=False)


class _Message:
    headers = {"id": "task-1"}


def test_the_unacked_record_is_retried_until_the_broker_answers():
    outcomes = [ConnectionError("down"), ConnectionError("down"), None]
    calls: list[str] = []
    slept: list[float] = []

    def append(message: object, tag: str) -> None:
        calls.append(tag)
        if outcome := outcomes.pop(0):
            raise outcome

    retrying_append(append, (ConnectionError,), budget_s=10, sleep=slept.append)(_Message(), "tag-1")
    assert calls == ["tag-1"] * 3 and slept == [0.05, 0.1]


def test_the_unacked_record_gives_up_after_its_budget():
    def append(message: object, tag: str) -> None:
        raise ConnectionError("down for good")

    with pytest.raises(ConnectionError):
        retrying_append(append, (ConnectionError,), budget_s=0, sleep=lambda s: None)(_Message(), "tag-1")


def test_a_cold_shutdown_stops_retrying_the_unacked_record(monkeypatch):
    from celery.worker import state

    monkeypatch.setattr(state, "should_terminate", 1)
    slept: list[float] = []

    def append(message: object, tag: str) -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        retrying_append(append, (ConnectionError,), budget_s=300, sleep=slept.append)(_Message(), "tag-1")
    assert slept == []


def test_only_errors_that_waiting_can_cure_are_retried():
    assert retried_errors((ConnectionError, KeyError, TimeoutError)) == (ConnectionError, TimeoutError)
