"""The HTTP ingress against a real Redis.

The end-to-end test runs ``optimum-bridge api`` as its own process next to a
real worker and the sandbox, over real HTTP. The others call ``create_app``
in-process through ``httpx.ASGITransport`` (the ASGI app itself, no socket)
and drive Redis directly where a worker would only make them slower; only the
streamed-body test keeps uvicorn in a thread, because what it checks is how a
chunked body arrives from a real connection.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient
from optimum_bridge.ingress.app import MAX_BODY_BYTES, BodyLimit, create_app, serve
from optimum_bridge.ingress.auth import KeyRing
from optimum_bridge.ingress.http import BATCH_BODY_BYTES
from optimum_bridge.keys import CALLBACKS_QUEUE, OPERATIONS_QUEUE, Keys
from optimum_bridge.settings import Settings
from tests.support import CALLBACK_SECRET, ROOT, bridge_env, free_port, settings_from, wait_until

KEYS = "key-one,key-two"
AUTH = {"Authorization": "Bearer key-two"}
PROBLEM = "application/problem+json"
SERVE = ["-m", "optimum_bridge.cli", "api"]  # ``optimum-bridge api``, as the console script runs it
VEHICLES = {"method": "GET", "path": "/Vehicles"}


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem document of ``response``, checked for status, media type and RFC 9457 members."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["type"] == "about:blank" and body["status"] == status and body["title"], body
    assert isinstance(body["detail"], str) and "\n" not in body["detail"], body
    return body


def job_keys(client: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"{prefix}job:*", count=1000))


def prefix_keys(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every key under ``prefix``: jobs, batches, lanes, queues, anything."""
    return list(client.scan_iter(match=f"{prefix}*", count=1000))


def final_status(http: httpx.Client, job_id: str, *, timeout: float = 60) -> dict[str, Any]:
    """Poll ``GET /v1/operations/{id}`` until the job is finished."""

    def finished() -> dict[str, Any] | None:
        body = http.get(f"/v1/operations/{job_id}", headers=AUTH).raise_for_status().json()
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_until(finished, timeout=timeout, what=f"job {job_id} to finish")  # type: ignore[no-any-return]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus exposition, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def sample(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def local_settings(redis_url: str, prefix: str, **extra: str) -> Settings:
    fields = {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_KEY_PREFIX": prefix, "BRIDGE_API_KEYS": KEYS, **extra}
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


class InProcess(httpx.BaseTransport):
    """``httpx.ASGITransport`` behind a sync ``httpx.Client``: each request runs the app on an event loop.

    Like uvicorn, an exception the app raises after answering (Starlette re-raises
    it once its 500 is sent) stays on the server side instead of reaching the test.
    """

    def __init__(self, app: Any) -> None:
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def roundtrip() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(body))

        return asyncio.run(roundtrip())


@pytest.fixture
def ingress() -> Iterator[Callable[..., httpx.Client]]:
    """Factory: ``ingress(settings, client=None)`` → an HTTP client calling ``create_app`` in-process."""
    opened: list[httpx.Client] = []

    def start(settings: Settings, *, client: BridgeClient | None = None) -> httpx.Client:
        transport = InProcess(create_app(settings, client=client))
        opened.append(httpx.Client(transport=transport, base_url="http://ingress.test"))
        return opened[-1]

    yield start
    for http in opened:
        http.close()


@pytest.fixture
def served_ingress() -> Iterator[Callable[..., httpx.Client]]:
    """Factory: ``served_ingress(settings)`` serves ``create_app`` with uvicorn on a free port (real HTTP)."""
    running: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def start(settings: Settings, *, client: BridgeClient | None = None) -> httpx.Client:
        port = free_port()
        app = create_app(settings, client=client)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off", ws="none")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True, name="ingress")
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), timeout=10, what="the ingress to listen")
        assert server.started, "the in-process ingress did not start"
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        running.append((server, thread, http))
        return http

    yield start
    for server, thread, http in running:
        http.close()
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], tuple[subprocess.Popen[bytes], Path]]]:
    """Factory: start ``serve(load_settings())`` as a real process; stopped (SIGTERM) at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = tmp_path / f"api-{len(started)}.log"
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, *SERVE], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        started.append(process)
        return process, log_path

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_api_process_end_to_end(redis_server, prefix, sandbox, workers, receiver, api_process):
    """The issue's scenario: a real ``optimum-bridge api`` process, a real worker, a signed callback."""
    sb = sandbox(quota="10/s", fleet_size=5)
    port = free_port()
    env = bridge_env(redis_server.url, prefix, sb, BRIDGE_API_KEYS=KEYS, BRIDGE_API_PORT=str(port))
    process, log_path = api_process(env)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, f"the ingress exited early:\n{log_path.read_text()}"
        try:
            return httpx.get(f"{base}/healthz", timeout=2).json() == {"status": "ok"}
        except httpx.TransportError:
            return False

    wait_until(healthy, timeout=30, what="the ingress /healthz")
    assert f"http://127.0.0.1:{port}" in log_path.read_text()
    anonymous = httpx.Client(base_url=base, timeout=30)
    http = httpx.Client(base_url=base, timeout=30, headers=AUTH)

    # Not ready until a worker heartbeat exists; ready once one runs.
    assert "worker" in problem_of(anonymous.get("/readyz"), 503)["detail"]
    workers(env, concurrency=2)
    wait_until(lambda: anonymous.get("/readyz").status_code == 200, timeout=30, what="/readyz to turn 200")
    assert anonymous.get("/readyz").json()["workers"] >= 1

    # Refusals: no key, a wrong key, a malformed operation, an oversized body.
    missing = anonymous.post("/v1/operations", json=VEHICLES)
    assert "Authorization" in problem_of(missing, 401)["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = anonymous.post("/v1/operations", json=VEHICLES, headers={"Authorization": "Bearer key-three"})
    assert problem_of(wrong, 401)["detail"] == "the API key is not accepted"
    bad = problem_of(http.post("/v1/operations", json={"method": "TRACE", "path": "/Vehicles"}), 422)
    assert bad["detail"].startswith("method: ") and bad["errors"][0]["field"] == "method"
    huge = {**VEHICLES, "body": "x" * MAX_BODY_BYTES}
    assert "body" in problem_of(http.post("/v1/operations", json=huge), 413)["detail"]
    assert job_keys(redis_server.client(), prefix) == 0

    # A valid operation: 202, then the outcome by polling and by the signed callback.
    accepted = http.post("/v1/operations", json={**VEHICLES, "callback": {"url": receiver.url}, "metadata": {"n": 1}})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    assert accepted.json() == {"id": job_id, "status": "queued", "links": {"self": f"/v1/operations/{job_id}"}}
    assert accepted.headers["location"] == f"/v1/operations/{job_id}"
    status = final_status(http, job_id)
    assert status["status"] == "succeeded" and status["attempts"] == 1, status
    assert len(status["response"]["body"]) == 5
    wait_until(lambda: receiver.received, timeout=30, what="the callback")
    callback = receiver.received[0]
    payload = Webhook(CALLBACK_SECRET).verify(callback.body, callback.headers)
    assert payload["type"] == "operation.succeeded"
    assert payload["data"] == status
    assert payload["data"]["operation"]["metadata"] == {"n": 1}

    # A repeated idempotency key (header, then field): 200 with the same job.
    first = http.post("/v1/operations", json=VEHICLES, headers={"Idempotency-Key": "fleet-2026-11-27"})
    assert first.status_code == 202, first.text
    again = http.post("/v1/operations", json={**VEHICLES, "idempotency_key": "fleet-2026-11-27"})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["links"] == first.json()["links"]
    assert again.json()["status"] in ("queued", "running", "succeeded") and "submitted_at" in again.json()

    # A batch of three: 202 and three new jobs.
    before = job_keys(redis_server.client(), prefix)
    batch = http.post(
        "/v1/operations:batch", json={"operations": [VEHICLES, VEHICLES, {**VEHICLES, "query": {"a": 1}}]}
    )
    assert batch.status_code == 202, batch.text
    results = batch.json()["results"]
    assert len(results) == 3 and all(item["created"] for item in results)
    assert len({item["id"] for item in results}) == 3
    assert job_keys(redis_server.client(), prefix) == before + 3
    for item in results:
        assert final_status(http, item["id"])["status"] == "succeeded"

    # A batch with one bad item: 422 naming it, and nothing queued.
    before = job_keys(redis_server.client(), prefix)
    refused = http.post(
        "/v1/operations:batch", json={"operations": [VEHICLES, {"method": "GET", "path": "Vehicles"}, VEHICLES]}
    )
    body = problem_of(refused, 422)
    assert body["detail"].startswith("operations[1].path: "), body
    assert [e["field"] for e in body["errors"]] == ["operations[1].path"]
    assert job_keys(redis_server.client(), prefix) == before

    # The process stops on SIGTERM (uvicorn shuts down gracefully, then re-raises the signal).
    anonymous.close()
    http.close()
    process.terminate()
    assert process.wait(15) in (0, -signal.SIGTERM), log_path.read_text()


def test_serve_refuses_to_start_without_api_keys(redis_server, prefix, capsys):
    settings = Settings(_env_file=None, BRIDGE_REDIS_URL=redis_server.url, BRIDGE_KEY_PREFIX=prefix)  # type: ignore[call-arg]
    assert serve(settings) == 2
    err = capsys.readouterr().err.strip()
    assert "BRIDGE_API_KEYS: required for the HTTP ingress" in err
    assert len(err.splitlines()) == 1


def test_serve_returns_1_when_the_port_is_taken(redis_server, prefix, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(local_settings(redis_server.url, prefix, BRIDGE_API_PORT=str(port))) == 1
    assert "optimum-bridge ingress on" not in capsys.readouterr().out


def test_metrics_count_jobs_and_calls(redis_server, prefix, sandbox, workers, ingress):
    env = bridge_env(redis_server.url, prefix, sandbox(quota="10/s", fleet_size=3), BRIDGE_API_KEYS=KEYS)
    http = ingress(settings_from(env))
    workers(env, concurrency=1)
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    before = samples(response.text)

    job_id = http.post("/v1/operations", json=VEHICLES, headers=AUTH).json()["id"]
    assert final_status(http, job_id)["status"] == "succeeded"
    after = samples(http.get("/metrics").text)

    succeeded = "optimum_bridge_jobs_total", {"state": "succeeded"}
    assert sample(after, succeeded[0], **succeeded[1]) == sample(before, succeeded[0], **succeeded[1]) + 1
    ok_calls = "optimum_bridge_api_calls_total", {"status": "200"}
    assert sample(after, ok_calls[0], **ok_calls[1]) >= sample(before, ok_calls[0], **ok_calls[1]) + 1
    assert sample(after, "optimum_bridge_token_requests_total") >= 1
    assert sample(after, "optimum_bridge_api_call_duration_seconds_count") >= 1
    assert sample(after, "optimum_bridge_api_call_duration_seconds_bucket", le="+Inf") == sample(
        after, "optimum_bridge_api_call_duration_seconds_count"
    )


def test_metrics_exposition_maps_every_redis_counter(redis_server, prefix, ingress):
    """Seeded Redis state appears under the documented names, with a well-formed histogram."""
    client, keys = redis_server.client(), Keys(prefix)
    client.hset(
        keys.stats,
        mapping={
            "calls:200": 7, "calls:429": 2, "rate_limited": 2, "token_requests": 3, "jobs:succeeded": 5,
            "jobs:failed": 1, "callbacks:delivered": 4, "callbacks:failed": 2, "callbacks:dead": 1,
            "latency_bucket:0.1": 2, "latency_bucket:0.5": 4, "latency_bucket:1.0": 2, "latency_bucket:30.0": 1,
            "latency_bucket:inf": 1, "latency_count": 10, "latency_sum": 12.5,
        },
    )  # fmt: skip
    client.rpush(keys.queue(OPERATIONS_QUEUE), "a", "b", "c")
    client.rpush(keys.queue(CALLBACKS_QUEUE), "d")
    client.zadd(keys.due, {"x": 1, "y": 2})
    client.hset(keys.dead_letters, mapping={"job1": "{}", "job2": "{}"})
    parsed = samples(ingress(local_settings(redis_server.url, prefix)).get("/metrics").text)

    expected = {
        ("optimum_bridge_queue_depth", ("queue", OPERATIONS_QUEUE)): 3,
        ("optimum_bridge_queue_depth", ("queue", CALLBACKS_QUEUE)): 1,
        ("optimum_bridge_retries_scheduled", None): 2,
        ("optimum_bridge_dead_letters", None): 2,
        ("optimum_bridge_jobs_total", ("state", "succeeded")): 5,
        ("optimum_bridge_jobs_total", ("state", "failed")): 1,
        ("optimum_bridge_api_calls_total", ("status", "200")): 7,
        ("optimum_bridge_api_calls_total", ("status", "429")): 2,
        ("optimum_bridge_rate_limited_total", None): 2,
        ("optimum_bridge_token_requests_total", None): 3,
        ("optimum_bridge_callbacks_total", ("outcome", "delivered")): 4,
        ("optimum_bridge_callbacks_total", ("outcome", "failed")): 2,
        ("optimum_bridge_callbacks_total", ("outcome", "dead")): 1,
        ("optimum_bridge_api_call_duration_seconds_bucket", ("le", "0.05")): 0,
        ("optimum_bridge_api_call_duration_seconds_bucket", ("le", "0.25")): 2,
        ("optimum_bridge_api_call_duration_seconds_bucket", ("le", "1.0")): 8,
        ("optimum_bridge_api_call_duration_seconds_bucket", ("le", "10.0")): 8,
        ("optimum_bridge_api_call_duration_seconds_bucket", ("le", "30.0")): 9,
        ("optimum_bridge_api_call_duration_seconds_bucket", ("le", "+Inf")): 10,
        ("optimum_bridge_api_call_duration_seconds_count", None): 10,
        ("optimum_bridge_api_call_duration_seconds_sum", None): 12.5,
    }
    for (name, label), value in expected.items():
        labels = dict([label]) if label else {}
        assert (name, frozenset(labels.items())) in parsed, (name, labels)
        assert sample(parsed, name, **labels) == value, (name, labels)


def test_readyz_follows_worker_heartbeats(redis_server, prefix, ingress):
    client, keys = redis_server.client(), Keys(prefix)
    http = ingress(local_settings(redis_server.url, prefix))
    assert "heartbeat" in problem_of(http.get("/readyz"), 503)["detail"]
    now = int(client.time()[0])
    client.zadd(keys.workers, {"old-worker": now - 31})
    problem_of(http.get("/readyz"), 503)
    client.zadd(keys.workers, {"live-worker": now - 5})
    assert http.get("/readyz").json() == {"status": "ready", "workers": 1}
    assert http.get("/healthz").json() == {"status": "ok"}


def test_redis_down_is_503_not_500(ingress):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    http = ingress(local_settings(dead, "down:"))
    assert http.get("/healthz").status_code == 200
    assert "redis" in problem_of(http.get("/readyz"), 503)["detail"].lower()
    problem_of(http.get("/metrics"), 503)
    problem_of(http.post("/v1/operations", json=VEHICLES, headers=AUTH), 503)
    problem_of(http.get("/v1/operations/abc", headers=AUTH), 503)


def test_auth_accepts_only_configured_keys(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    for headers in ({}, {"Authorization": "Basic a2V5LW9uZQ=="}, {"Authorization": "Bearer"},
                    {"Authorization": "Bearer key-on"}, {"Authorization": "Bearer key-one,key-two"}):  # fmt: skip
        response = http.post("/v1/operations", json=VEHICLES, headers=headers)
        problem_of(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        problem_of(http.get("/v1/operations/x", headers=headers), 401)
    # Authentication comes before the body is even parsed.
    problem_of(http.post("/v1/operations", content=b"{not json"), 401)
    for key in ("key-one", "key-two"):
        assert http.post("/v1/operations", json=VEHICLES, headers={"Authorization": f"Bearer {key}"}).status_code == 202
    assert job_keys(redis_server.client(), prefix) == 2

    no_keys = ingress(local_settings(redis_server.url, prefix, BRIDGE_API_KEYS=""))
    problem_of(no_keys.post("/v1/operations", json=VEHICLES, headers={"Authorization": "Bearer x"}), 401)
    problem_of(no_keys.post("/v1/operations", json=VEHICLES, headers=AUTH), 401)


def test_key_matches_checks_every_key():
    ring = KeyRing.of(local_settings("redis://127.0.0.1:1/0", "k:"))
    assert ring.match("key-one") and ring.match("key-two")
    assert not ring.match("key-one ") and not ring.match("") and not ring.match("key")
    assert not KeyRing(()).match("key-one")


@pytest.mark.parametrize(
    ("operation", "field"),
    [
        ({"method": "TRACE", "path": "/Vehicles"}, "method"),
        ({"path": "/Vehicles"}, "method"),
        ({"method": "GET", "path": "//evil.example.com/steal"}, "path"),
        ({"method": "GET", "path": "https://evil.example.com/x"}, "path"),
        ({"method": "GET", "path": "/a/../b"}, "path"),
        ({"method": "GET", "path": "/Vehicles", "callback": {"url": "ftp://x.example.com"}}, "callback.url"),
        ({"method": "GET", "path": "/Vehicles", "callback": {"url": "http://169.254.169.254/latest"}}, "callback.url"),
        ({"method": "GET", "path": "/Vehicles", "idempotency_key": "has space"}, "idempotency_key"),
        ({"method": "GET", "path": "/Vehicles", "surprise": 1}, "surprise"),
        (["GET", "/Vehicles"], "body"),
    ],
)
def test_invalid_operation_is_422_naming_the_field(redis_server, prefix, ingress, operation, field):
    http = ingress(local_settings(redis_server.url, prefix))
    body = problem_of(http.post("/v1/operations", json=operation, headers=AUTH), 422)
    assert body["detail"].startswith(f"{field}: "), body
    assert body["errors"][0]["field"] == field
    assert job_keys(redis_server.client(), prefix) == 0


def test_idempotency_header_and_field(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    conflict = http.post(
        "/v1/operations", json={**VEHICLES, "idempotency_key": "a"}, headers={**AUTH, "Idempotency-Key": "b"}
    )
    assert problem_of(conflict, 422)["errors"][0]["field"] == "idempotency_key"
    bad_header = http.post("/v1/operations", json=VEHICLES, headers={**AUTH, "Idempotency-Key": "two words"})
    assert problem_of(bad_header, 422)["detail"].startswith("idempotency_key: ")
    first = http.post("/v1/operations", json=VEHICLES, headers={**AUTH, "Idempotency-Key": "k1"})
    same = http.post(
        "/v1/operations", json={**VEHICLES, "idempotency_key": "k1"}, headers={**AUTH, "Idempotency-Key": "k1"}
    )
    other = http.post("/v1/operations", json=VEHICLES, headers={**AUTH, "Idempotency-Key": "k2"})
    assert (first.status_code, same.status_code, other.status_code) == (202, 200, 202)
    assert same.json()["id"] == first.json()["id"] != other.json()["id"]
    assert same.json()["status"] == "queued" and same.json()["operation"]["path"] == "/Vehicles"
    assert job_keys(redis_server.client(), prefix) == 2


def test_malformed_bodies_are_problems(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    for raw in (b"", b"{", b'{"method": "GET", "path": "/x", "body": NaN}', b"[" * 100_000, b"\xff\xfe\x00"):
        body = problem_of(http.post("/v1/operations", content=raw, headers=AUTH), 400)
        assert body["detail"].startswith("body: not valid JSON"), body
        assert body["errors"] == [{"field": "body", "message": body["detail"].removeprefix("body: ")}]
    problem_of(http.post("/v1/operations", content=b'"a string"', headers=AUTH), 422)
    assert job_keys(redis_server.client(), prefix) == 0


def test_batch_validation_names_items_and_queues_nothing(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    cases: list[tuple[Any, str]] = [
        ({"operations": []}, "operations"),
        ({"operations": [VEHICLES] * 1001}, "operations"),
        ({"operations": VEHICLES}, "operations"),
        ({"operations": [VEHICLES], "extra": 1}, "operations"),
        ([VEHICLES], "operations"),
        ({"operations": [VEHICLES, VEHICLES, "GET /x"]}, "operations[2]"),
        ({"operations": [VEHICLES, {"method": "GET", "path": "/x", "callback": {"url": "http://10.0.0.1/"}}]},
         "operations[1].callback.url"),
    ]  # fmt: skip
    for payload, field in cases:
        body = problem_of(http.post("/v1/operations:batch", json=payload, headers=AUTH), 422)
        assert body["errors"][0]["field"] == field, body
    several = {"operations": [{"method": "TRACE", "path": "/x"}, VEHICLES, {"method": "GET", "path": "x"}]}
    body = problem_of(http.post("/v1/operations:batch", json=several, headers=AUTH), 422)
    assert [e["field"] for e in body["errors"]] == ["operations[0].method", "operations[2].path"]
    assert job_keys(redis_server.client(), prefix) == 0

    full = http.post("/v1/operations:batch", json={"operations": [VEHICLES] * 1000}, headers=AUTH)
    assert full.status_code == 202 and len(full.json()["results"]) == 1000
    assert job_keys(redis_server.client(), prefix) == 1000


def test_body_cap_by_content_length_and_by_stream(redis_server, prefix, served_ingress):
    http = served_ingress(local_settings(redis_server.url, prefix))  # a chunked body, as a socket delivers it
    envelope = json.dumps({**VEHICLES, "body": ""}).encode()
    exact = json.dumps({**VEHICLES, "body": "x" * (MAX_BODY_BYTES - len(envelope))}).encode()
    assert len(exact) == MAX_BODY_BYTES
    assert http.post("/v1/operations", content=exact, headers=AUTH).status_code == 202
    over = exact[:-2] + b'x"}'
    problem_of(http.post("/v1/operations", content=over, headers=AUTH), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap is enforced on the stream
        yield over[: MAX_BODY_BYTES // 2]
        yield over[MAX_BODY_BYTES // 2 :]

    streamed = http.post("/v1/operations", content=chunks(), headers=AUTH)
    assert "content-length" not in streamed.request.headers
    problem_of(streamed, 413)
    assert job_keys(redis_server.client(), prefix) == 1


def test_routing_errors_are_problems_and_status_reads_back(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    problem_of(http.get("/nowhere"), 404)
    problem_of(http.get("/v1/operations/0123456789abcdef", headers=AUTH), 404)
    not_allowed = http.delete("/v1/operations", headers=AUTH)
    problem_of(not_allowed, 405)
    assert "POST" in not_allowed.headers["allow"]
    job_id = http.post("/v1/operations", json={**VEHICLES, "metadata": {"k": "v"}}, headers=AUTH).json()["id"]
    status = http.get(f"/v1/operations/{job_id}", headers=AUTH)
    assert status.status_code == 200 and status.headers["content-type"] == "application/json"
    client = BridgeClient(local_settings(redis_server.url, prefix))
    forecast = {"position", "estimated_start_at"}  # computed at each read: the clock moves between two reads
    expected = json.loads(client.get(job_id).model_dump_json())
    assert {k: v for k, v in status.json().items() if k not in forecast} == {
        k: v for k, v in expected.items() if k not in forecast
    }
    assert status.json()["operation"]["metadata"] == {"k": "v"}


def test_operation_status_carries_priority_account_and_forecast(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    job_id = http.post("/v1/operations", json={**VEHICLES, "priority": "urgent"}, headers=AUTH).json()["id"]
    status = http.get(f"/v1/operations/{job_id}", headers=AUTH).json()
    assert status["priority"] == "urgent" and status["account"] == "default", status
    assert status["status"] == "queued" and status["started_at"] is None
    assert status["position"] == 0 and status["estimated_start_at"] is not None, status
    refused = http.post("/v1/operations", json={**VEHICLES, "priority": "asap"}, headers=AUTH)
    assert problem_of(refused, 422)["errors"][0]["field"] == "priority"
    # spec 13: an identical GET waits on this one's call; max_age_s is for GETs only
    joined = http.post("/v1/operations", json={**VEHICLES, "max_age_s": 30}, headers=AUTH).json()
    assert joined["status"] == "queued"  # nothing fresh yet: it joins the waiting call
    assert http.get(f"/v1/operations/{joined['id']}", headers=AUTH).json()["coalesced_with"] == job_id
    person = {"method": "POST", "path": "/Persons", "body": {"firstName": "A", "lastName": "B"}, "max_age_s": 30}
    write = problem_of(http.post("/v1/operations", json=person, headers=AUTH), 422)
    assert "max_age_s applies to a GET only (this is a POST)" in write["errors"][0]["message"], write


def test_unexpected_error_is_500_without_details(redis_server, prefix, ingress):
    class Broken(BridgeClient):
        def get(self, job_id: str) -> Any:
            raise RuntimeError("secret internals")

    settings = local_settings(redis_server.url, prefix)
    http = ingress(settings, client=Broken(settings))
    body = problem_of(http.get("/v1/operations/x", headers=AUTH), 500)
    assert "secret" not in json.dumps(body)


def test_openapi_documents_the_operation(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["Operation"]["properties"]) >= {"method", "path", "query", "body", "callback", "idempotency_key"}
    assert schemas["Operation"]["properties"]["method"]["enum"] == ["GET", "POST", "PUT", "PATCH", "DELETE"]
    submit = spec["paths"]["/v1/operations"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Operation"}
    assert {"202", "401", "413", "422"} <= set(submit["responses"])
    assert spec["paths"]["/v1/operations:batch"]["post"]["requestBody"]["required"] is True
    assert "OperationBatch" in schemas and "JobStatus" in schemas
    assert "bearer" in json.dumps(spec["components"]["securitySchemes"]).lower()
    assert http.get("/docs").status_code == 200


def test_body_limit_trusts_a_declared_length_without_reading():
    """Over the cap by Content-Length: 413 at once, the body is never received."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the application must not run")

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/operations", "headers": [(b"content-length", b"1048577")]}
    asyncio.run(BodyLimit(app, max_bytes=MAX_BODY_BYTES)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert (b"content-type", PROBLEM.encode()) in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["status"] == 413


# --- batches (spec §11) ------------------------------------------------------------------


def test_batch_is_accepted_and_reads_back(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix, BRIDGE_CALLBACK_ALLOW_PRIVATE="true"))
    operations = [VEHICLES, {**VEHICLES, "query": {"page": 2}}, {**VEHICLES, "priority": "bulk"}]
    payload = {"operations": operations, "callback": {"url": "http://127.0.0.1:9/hooks"}, "metadata": {"run": "n1"}}
    accepted = http.post("/v1/batches", json=payload, headers=AUTH)
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    batch_id = body["id"]
    assert body == {
        "id": batch_id,
        "status": "running",
        "total": 3,
        "job_ids": body["job_ids"],
        "links": {"self": f"/v1/batches/{batch_id}"},
    }
    assert accepted.headers["location"] == f"/v1/batches/{batch_id}"
    assert len(body["job_ids"]) == len(set(body["job_ids"])) == 3
    assert job_keys(redis_server.client(), prefix) == 3
    assert http.get(f"/v1/operations/{body['job_ids'][2]}", headers=AUTH).json()["priority"] == "bulk"

    status = http.get(f"/v1/batches/{batch_id}", headers=AUTH)
    assert status.status_code == 200 and status.headers["content-type"] == "application/json"
    read = status.json()
    assert set(read) == {"id", "status", "total", "counts", "metadata", "submitted_at", "finished_at",
                         "estimated_done_at"}  # fmt: skip
    assert (read["id"], read["status"], read["total"], read["metadata"]) == (batch_id, "running", 3, {"run": "n1"})
    assert read["counts"] == {"queued": 3, "running": 0, "retrying": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert read["finished_at"] is None and read["estimated_done_at"] is not None
    client = BridgeClient(local_settings(redis_server.url, prefix))
    assert client.batch_jobs(batch_id) == body["job_ids"]


def test_batch_with_a_bad_item_is_422_and_writes_nothing(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    redis = redis_server.client()
    bad = [VEHICLES, VEHICLES, VEHICLES, {"method": "GET", "path": "Vehicles"}, VEHICLES]
    body = problem_of(http.post("/v1/batches", json={"operations": bad}, headers=AUTH), 422)
    assert body["detail"].startswith("operations[3].path: "), body
    assert [e["field"] for e in body["errors"]] == ["operations[3].path"]
    cases: list[tuple[Any, str]] = [
        ({"operations": []}, "operations"),
        ({"operations": VEHICLES}, "operations"),
        ([VEHICLES], "operations"),
        ({"operations": [VEHICLES] * 10_001}, "operations"),
        ({"operations": [VEHICLES, {"method": "TRACE", "path": "/x"}, "GET /x"]}, "operations[1].method"),
        ({"operations": [VEHICLES], "callback": {"url": "ftp://x.example.com"}}, "callback.url"),
        ({"operations": [VEHICLES], "callback": {"url": "http://169.254.169.254/latest"}}, "callback.url"),
        ({"operations": [VEHICLES, {**VEHICLES, "callback": {"url": "http://10.0.0.1/"}}]},
         "operations[1].callback.url"),
        ({"operations": [VEHICLES], "metadata": "nightly"}, "metadata"),
        ({"operations": [VEHICLES], "surprise": 1}, "surprise"),
    ]  # fmt: skip
    for payload, field in cases:
        body = problem_of(http.post("/v1/batches", json=payload, headers=AUTH), 422)
        assert body["errors"][0]["field"] == field, (field, body)
    assert prefix_keys(redis, prefix) == []


def test_unknown_batch_is_404_and_batches_need_a_key(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    assert "no batch" in problem_of(http.get("/v1/batches/0123456789abcdef", headers=AUTH), 404)["detail"]
    for headers in ({}, {"Authorization": "Bearer key-three"}):
        response = http.post("/v1/batches", json={"operations": [VEHICLES]}, headers=headers)
        problem_of(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        problem_of(http.get("/v1/batches/0123456789abcdef", headers=headers), 401)
    problem_of(http.post("/v1/batches", content=b"{not json"), 401)  # the key before the body
    assert prefix_keys(redis_server.client(), prefix) == []


def test_ten_thousand_operations_fit_the_batch_cap_and_a_larger_body_does_not(redis_server, prefix, ingress):
    http = ingress(local_settings(redis_server.url, prefix))
    operations = [
        {"method": "GET", "path": "/Geolocation/Trips", "query": {"registrationNumber": f"EW-{n:03d}-YQ",
         "startDate": "2026-11-26T00:00:00", "endDate": "2026-11-27T00:00:00"}, "metadata": {"n": n}}
        for n in range(10_000)
    ]  # fmt: skip
    raw = json.dumps({"operations": operations}).encode()
    assert MAX_BODY_BYTES < len(raw) < BATCH_BODY_BYTES
    accepted = http.post("/v1/batches", content=raw, headers=AUTH)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["total"] == len(accepted.json()["job_ids"]) == 10_000
    assert job_keys(redis_server.client(), prefix) == 10_000
    # The larger cap is this route's only: the same body is refused elsewhere.
    problem_of(http.post("/v1/operations:batch", content=raw, headers=AUTH), 413)

    padding = {**VEHICLES, "body": "x" * (BATCH_BODY_BYTES // 2)}
    over = json.dumps({"operations": [padding, padding]}).encode()
    assert "16777216 bytes" in problem_of(http.post("/v1/batches", content=over, headers=AUTH), 413)["detail"]
    assert job_keys(redis_server.client(), prefix) == 10_000


def test_the_batch_cap_holds_on_a_streamed_body(redis_server, prefix, served_ingress):
    http = served_ingress(local_settings(redis_server.url, prefix))
    chunk = b" " * (1024 * 1024)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"operations": [{"method": "GET", "path": "/Vehicles"}]'
        for _ in range(BATCH_BODY_BYTES // len(chunk) + 1):
            yield chunk
        yield b"}"

    streamed = http.post("/v1/batches", content=chunks(), headers=AUTH)
    assert "content-length" not in streamed.request.headers
    problem_of(streamed, 413)
    small = http.post("/v1/batches", content=iter([b'{"operations": [', json.dumps(VEHICLES).encode(), b"]}"]),
                      headers=AUTH)  # fmt: skip
    assert small.status_code == 202, small.text
    assert job_keys(redis_server.client(), prefix) == 1


def test_openapi_documents_the_batch_routes(redis_server, prefix, ingress):
    spec = ingress(local_settings(redis_server.url, prefix)).get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    submit = spec["paths"]["/v1/batches"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchRequest"
    }
    assert set(schemas["BatchRequest"]["properties"]) == {"operations", "callback", "metadata"}
    assert schemas["BatchRequest"]["properties"]["operations"]["maxItems"] == 10_000
    assert {"202", "401", "413", "422"} <= set(submit["responses"])
    assert submit["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchCreated"
    }
    read = spec["paths"]["/v1/batches/{batch_id}"]["get"]
    assert read["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchStatus"
    }
    assert {"200", "401", "404"} <= set(read["responses"])
    assert {"queued", "running", "retrying", "succeeded", "failed"} <= set(schemas["BatchCounts"]["properties"])
    assert submit["security"] and read["security"]  # the bearer key, as on /v1/operations
