"""Operations checked against the API's own OpenAPI document (spec §13, first part).

The sandbox's document is built from its routes; the checker (openapi-core) refuses
what it does not allow with one line naming the field, the same from Python, the
ingress and the CLI, and spends no call on it.
"""

from __future__ import annotations

import logging
import re
import time

import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import SecretStr

from optimum_bridge import BridgeClient, producer_steps
from optimum_bridge.keys import Keys
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.producer import InvalidOperation
from optimum_bridge.sandbox.document import DOCUMENT_PATH, build_document
from optimum_bridge.sandbox.endpoints import ROUTE_DOCS, ROUTES
from optimum_bridge.schemas import Operation
from optimum_bridge.upstream.documents import DocumentStore
from optimum_bridge.upstream.fetchers import DocumentFetcher
from optimum_bridge.upstream.openapi import OperationChecker, fetch_document
from optimum_bridge.upstream.tokens import Token
from tests.support import bridge_env, run_cli, settings_from, wait_until
from tests.system.test_ingress import AUTH, InProcess, local_settings, problem_of

TRIPS_QUERY = {"registrationNumber": "EW-266-YQ", "startDate": "2026-11-26T00:00:00", "endDate": "2026-11-27T00:00:00"}

#: Each refusal kind: the operation, and the line it is refused with.
REFUSALS = [
    ({"method": "GET", "path": "/Vehicle"}, "path: GET /Vehicle is not in the API (did you mean /Vehicles?)"),
    ({"method": "DELETE", "path": "/Persons"}, "method: DELETE /Persons is not in the API (allowed: GET, POST)"),
    (
        {"method": "GET", "path": "/Geolocation/Trips", "query": {"startDate": "2026-11-26T00:00:00"}},
        "query.endDate: required by the API",
    ),
    (
        {"method": "GET", "path": "/Geolocation/Trips", "query": {**TRIPS_QUERY, "startDate": "yesterday"}},
        "query.startDate: 'yesterday' is not a 'date-time'",
    ),
    (
        {"method": "POST", "path": "/Persons", "body": {"firstName": "Ada", "lastName": 7}},
        "body.lastName: 7 is not of type 'string'",
    ),
    ({"method": "POST", "path": "/Persons", "body": {"firstName": "Ada"}}, "body: 'lastName' is a required property"),
]
IDS = ["unknown-path", "wrong-method", "missing-query", "bad-format", "body-type", "body-required"]


def checker() -> OperationChecker:
    return OperationChecker(build_document())


def check(operation: dict[str, object]) -> str | None:
    return checker().check(Operation.model_validate(operation))


# -- the sandbox's document ------------------------------------------------------------------


def test_the_sandbox_document_is_valid_and_has_every_route():
    document = build_document()
    validate(document)  # openapi-spec-validator: a real OpenAPI 3 document
    for method, pattern, handler in ROUTES:
        template = ROUTE_DOCS[handler]["path"]
        assert method.lower() in document["paths"][template], (method, template)
        assert pattern.match(re.sub(r"\{[^}]+\}", "EW-266-YQ", template)), (pattern, template)
    assert sum(len(item) for item in document["paths"].values()) == len(ROUTES)


def test_the_sandbox_serves_its_document_open_and_free(sandbox):
    sb = sandbox()
    answer = httpx.get(sb.url + DOCUMENT_PATH)
    assert answer.status_code == 200 and answer.json() == build_document()
    assert sb.stats()["calls"] == 0


# -- the checker ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("operation", "line"), REFUSALS, ids=IDS)
def test_each_refusal_is_one_line_naming_the_field(operation, line):
    assert check(operation) == line


@pytest.mark.parametrize(
    "operation",
    [
        {"method": "GET", "path": "/vehicles"},
        {"method": "get", "path": "/VEHICLES/ew-266-yq"},
        {"method": "GET", "path": "/Vehicles/ZZ-000-ZZ"},
        {"method": "GET", "path": "/geolocation/trips", "query": TRIPS_QUERY},
        {"method": "GET", "path": "/Geolocation/Trips", "query": {**TRIPS_QUERY, "startDate": "2026-11-26T00:00:00Z"}},
        {"method": "GET", "path": "/VehicleAssignments/current", "query": {"registrationNumber": "EW-266-YQ"}},
        {"method": "POST", "path": "/persons", "body": {"firstName": "Ada", "lastName": "Lovelace"}},
    ],
    ids=["lowercase", "uppercase-template", "plate", "trips-no-offset", "trips-offset", "assignment", "post"],
)
def test_what_the_api_accepts_is_accepted(operation):
    assert check(operation) is None


# -- at submission, through Redis ----------------------------------------------------------------


def store_document(settings, runtime) -> None:
    """What a worker's upkeep does at start: fetch the document into Redis (here, in-process)."""
    rt: Runtime = runtime(settings)
    fetcher = DocumentFetcher(rt, DocumentStore(rt.redis, rt.keys), "default")
    assert fetcher.fetch_now() == 86400.0


@pytest.mark.parametrize(("operation", "line"), REFUSALS, ids=IDS)
def test_strict_refuses_at_submission_and_spends_no_call(redis_server, prefix, sandbox, runtime, operation, line):
    sb = sandbox()
    settings = settings_from(bridge_env(redis_server.url, prefix, sb))
    store_document(settings, runtime)
    with BridgeClient(settings) as bridge:
        with pytest.raises(InvalidOperation) as refused:
            bridge.submit(operation)
        assert str(refused.value) == line
        with pytest.raises(InvalidOperation) as in_batch:
            bridge.submit_many([{"method": "GET", "path": "/Vehicles"}, operation])
        assert str(in_batch.value) == f"operations[1].{line}"
        assert bridge.submit({"method": "GET", "path": "/geolocation/trips", "query": TRIPS_QUERY})
    assert sb.stats()["calls"] == 0
    assert sb.stats()["token_requests"] == 0


def test_warn_queues_and_logs_off_queues_silently(redis_server, prefix, sandbox, runtime, caplog):
    sb = sandbox()
    for mode, logged in (("warn", 1), ("off", 0)):
        settings = settings_from(bridge_env(redis_server.url, prefix, sb, BRIDGE_VALIDATE_OPERATIONS=mode))
        store_document(settings, runtime)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="optimum_bridge"), BridgeClient(settings) as bridge:
            job_id = bridge.submit({"method": "GET", "path": "/Vehicle"})
            assert bridge.get(job_id).status == "queued"
        lines = [r.getMessage() for r in caplog.records if "is not in the API" in r.getMessage()]
        assert len(lines) == logged, (mode, lines)


def test_without_a_document_operations_are_queued_unchecked_logged_once(
    redis_server, prefix, sandbox, caplog, monkeypatch
):
    monkeypatch.setattr(producer_steps, "_UNCHECKED_LOGGED", set())  # as in a fresh process
    settings = settings_from(bridge_env(redis_server.url, prefix, sandbox()))
    with caplog.at_level(logging.INFO, logger="optimum_bridge"):
        for _ in range(2):  # two clients of one process: still one line
            with BridgeClient(settings) as bridge:
                ids = [bridge.submit({"method": "GET", "path": "/Vehicle"}) for _ in range(3)]
                assert all(bridge.get(job_id).status == "queued" for job_id in ids)
    lines = [r.getMessage() for r in caplog.records if "unchecked" in r.getMessage()]
    assert len(lines) == 1, lines


def test_an_unreachable_document_is_logged_and_tried_again(redis_server, prefix, sandbox, runtime):
    sb = sandbox()
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_OPENAPI_URL=sb.url + "/swagger/v9/swagger.json")
    rt = runtime(settings_from(env))
    fetcher = DocumentFetcher(rt, DocumentStore(rt.redis, rt.keys), "default")
    assert fetcher.fetch_now() == 3600.0
    assert DocumentStore(rt.redis, Keys(prefix)).checker("default") is None


def test_the_ingress_answers_422_naming_the_field(redis_server, prefix):
    settings = local_settings(redis_server.url, prefix)
    DocumentStore(redis_server.client(), Keys(prefix)).put("default", build_document())
    from optimum_bridge.ingress.app import create_app

    with httpx.Client(transport=InProcess(create_app(settings)), base_url="http://ingress.test") as http:
        for operation, line in REFUSALS:
            body = problem_of(http.post("/v1/operations", json=operation, headers=AUTH), 422)
            assert body["detail"] == line
            assert body["errors"][0]["field"] == line.partition(": ")[0]
        ok = http.post("/v1/operations", json={"method": "GET", "path": "/vehicles"}, headers=AUTH)
        assert ok.status_code == 202, ok.text


def test_the_cli_exits_2_with_the_same_line(redis_server, prefix, sandbox, runtime):
    sb = sandbox()
    env = bridge_env(redis_server.url, prefix, sb)
    store_document(settings_from(env), runtime)
    done = run_cli(env, "submit", "GET", "/Vehicle")
    assert done.returncode == 2
    assert "invalid operation: path: GET /Vehicle is not in the API (did you mean /Vehicles?)" in done.stderr
    assert sb.stats()["calls"] == 0


def test_a_template_with_the_method_wins_over_an_earlier_one_without():
    document = build_document()
    document["paths"]["/Vehicles/{registrationNumber}"] = {
        "delete": {
            "parameters": [
                {"name": "registrationNumber", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {"204": {"description": "gone"}},
        }
    }
    document["paths"]["/Vehicles/current"] = {"get": {"responses": {"200": {"description": "OK"}}}}
    assert (
        OperationChecker(document).check(Operation.model_validate({"method": "GET", "path": "/vehicles/CURRENT"}))
        is None
    )


# -- fetching the document -----------------------------------------------------------------------


def test_a_worker_fetches_the_document_once_an_operation_is_checked_then_daily(redis_server, prefix, sandbox, workers):
    sb = sandbox()
    env = bridge_env(redis_server.url, prefix, sb)
    workers(env, concurrency=1)
    keys, client = Keys(prefix), redis_server.client()
    store = DocumentStore(client, keys)
    assert client.zcard(keys.openapi_due) == 0  # no timer per account: nothing asked, nothing fetched
    with BridgeClient(settings_from(env)) as bridge:
        bridge.submit({"method": "GET", "path": "/Vehicles"})  # checked (unchecked: no document yet): asks for it
        wait_until(lambda: store.checker("default") is not None, what="the document in Redis")
        with pytest.raises(InvalidOperation, match="did you mean /Vehicles"):
            bridge.submit({"method": "GET", "path": "/Vehicle"})
    next_fetch = client.zscore(keys.openapi_due, "default")
    assert next_fetch is not None and 86000 < next_fetch - time.time() <= 86400  # then daily


def test_the_token_goes_to_the_api_host_only():
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.url.host == "api.test" and "authorization" not in request.headers:
            return httpx.Response(401)
        return httpx.Response(200, json=build_document())

    class Tokens:
        def cached(self) -> None:
            return None

        def get(self) -> Token:
            return Token(SecretStr("tok"), "fp", 0.0)

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        fetch_document(http, "https://api.test/swagger/v1/swagger.json", api_url="https://api.test", tokens=Tokens())
        fetch_document(http, "https://docs.test/swagger.json", api_url="https://api.test", tokens=Tokens())
        # The API's host in plain http is not the API: the token would travel in clear.
        with pytest.raises(httpx.HTTPStatusError):
            fetch_document(http, "http://api.test/swagger.json", api_url="https://api.test", tokens=Tokens())
    assert seen == [("api.test", None), ("api.test", "Bearer tok"), ("docs.test", None), ("api.test", None)]


def test_openapi_url_per_account_from_the_accounts_file(redis_server, prefix, sandbox, tmp_path):
    sb = sandbox()
    path = tmp_path / "accounts.toml"
    path.write_text(
        "[accounts.acme]\n"
        'client_id = "acme-client"\nclient_secret_env = "ACME_SECRET"\n'
        f'environment = "sandbox"\napi_url = "{sb.url}"\ntoken_url = "{sb.url}/connect/token"\n'
        f'openapi_url = "{sb.url}/docs/openapi.json"\n'
    )
    settings = settings_from(bridge_env(redis_server.url, prefix, sb, BRIDGE_ACCOUNTS_FILE=str(path), ACME_SECRET="s"))
    assert settings.accounts["acme"].document_url == f"{sb.url}/docs/openapi.json"
    assert settings.accounts["default"].document_url == f"{sb.url}/swagger/v1/swagger.json"


def test_a_document_openapi_core_cannot_read_leaves_operations_unchecked(redis_server, prefix):
    broken = {"openapi": "3.1.0", "info": {"title": "x", "version": "1"}, "paths": {"/x/{a}": {"get": {}}}}
    DocumentStore(redis_server.client(), Keys(prefix)).put("default", broken)
    with BridgeClient(local_settings(redis_server.url, prefix)) as bridge:
        assert bridge.get(bridge.submit({"method": "GET", "path": "/Vehicle"})).status == "queued"


def test_one_fetch_a_day_for_every_worker_and_an_hour_after_a_failure(redis_server, prefix, sandbox, runtime):
    sb = sandbox()
    rt = runtime(settings_from(bridge_env(redis_server.url, prefix, sb)))
    first, second = (DocumentFetcher(rt, DocumentStore(rt.redis, rt.keys), "default") for _ in range(2))
    first.run()
    first.join(10)
    second.run()  # claimed by the first: no second fetch
    assert second._thread is None
    assert 86000 < rt.redis.ttl(rt.keys.openapi_claim("default")) <= 86400
    assert DocumentStore(rt.redis, rt.keys).checker("default") is not None

    rt.redis.delete(rt.keys.openapi_claim("default"))
    sb.stop()  # the API away: the claim is kept for an hour only
    first.run()
    first.join(30)
    assert 0 < rt.redis.ttl(rt.keys.openapi_claim("default")) <= 3600
