"""The Optimum API simulator, exercised over real HTTP on loopback.

Each test starts its own ``SandboxServer`` on a free port. Tests about time
(token expiry, the sliding-window quota) drive a fake monotonic clock instead of
sleeping, so they are exact and fast.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from optimum_bridge.clock import Clock
from optimum_bridge.sandbox import SandboxConfig, SandboxServer, create_app, main
from optimum_bridge.sandbox.fleet import generate_fleet
from optimum_bridge.sandbox.server import _parser, config_from_args
from optimum_bridge.sandbox.state import max_in_window

CLIENT = ("sandbox-client", "sandbox-secret")
PLATE_RE = re.compile(r"^[A-HJ-NP-TV-Z]{2}-\d{3}-[A-HJ-NP-TV-Z]{2}$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
DAY = "2026-11-26"


class FakeClock(Clock):
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def monotonic(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


MakeSandbox = Callable[..., SandboxServer]


@pytest.fixture
def sb(sandbox: MakeSandbox) -> SandboxServer:
    """One simulator without quota (most tests are not about the quota); ``sandbox`` makes others."""
    return sandbox(quota=None)


def get_token(sb: SandboxServer, client: tuple[str, str] = CLIENT) -> str:
    data = {"client_id": client[0], "client_secret": client[1], "grant_type": "client_credentials"}
    response = httpx.post(sb.token_url, data=data)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


Api = Callable[..., httpx.Client]


@pytest.fixture
def api() -> Iterator[Api]:
    """Factory: ``api(sb, token=None)`` → an httpx client on the API base, closed at teardown."""
    clients: list[httpx.Client] = []

    def factory(sb: SandboxServer, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=sb.url, headers=headers, follow_redirects=False)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def trips_query(start: str, end: str, plate: str | None = None) -> dict[str, str]:
    params = {"startDate": start, "endDate": end}
    if plate:
        params["registrationNumber"] = plate
    return params


# -- identity server -------------------------------------------------------------------


def test_token_request_returns_an_opaque_bearer_token(sandbox: MakeSandbox) -> None:
    sb = sandbox(token_lifetime_s=1234)
    data = {"client_id": CLIENT[0], "client_secret": CLIENT[1], "grant_type": "client_credentials"}
    first = httpx.post(sb.token_url, data=data)
    second = httpx.post(sb.token_url, data=data)
    assert first.status_code == 200
    body = first.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 1234
    assert len(body["access_token"]) >= 40
    assert body["access_token"] != second.json()["access_token"]
    assert sb.stats()["token_requests"] == 2


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"client_id": CLIENT[0], "client_secret": "wrong", "grant_type": "client_credentials"}, "invalid_client"),
        ({"client_id": "nobody", "client_secret": CLIENT[1], "grant_type": "client_credentials"}, "invalid_client"),
        ({"client_id": CLIENT[0], "client_secret": CLIENT[1], "grant_type": "password"}, "unsupported_grant_type"),
        ({"client_id": CLIENT[0], "grant_type": "client_credentials"}, "invalid_request"),
        ({"client_id": CLIENT[0], "client_secret": CLIENT[1]}, "invalid_request"),
    ],
)
def test_token_request_errors(sb: SandboxServer, form: dict[str, str], expected: str) -> None:
    response = httpx.post(sb.token_url, data=form)
    assert response.status_code == 400
    assert response.json() == {"error": expected}
    stats = sb.stats()
    assert (stats["token_requests"], stats["token_failures"]) == (1, 1)


def test_token_accepts_http_basic_client_credentials(sb: SandboxServer, api: Api) -> None:
    response = httpx.post(sb.token_url, data={"grant_type": "client_credentials"}, auth=CLIENT)
    assert response.status_code == 200
    assert api(sb, response.json()["access_token"]).get("/Persons").status_code == 200


# -- authentication --------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic abc"])
def test_api_requires_a_valid_bearer_token(sb: SandboxServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(sb.url + "/Vehicles", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_token"}
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    stats = sb.stats()
    assert (stats["calls"], stats["accepted"], stats["unauthorized"]) == (1, 0, 1)
    assert stats["log"][0]["client_id"] is None


def test_token_expires_after_its_lifetime(sandbox: MakeSandbox, api: Api) -> None:
    clock = FakeClock()
    sb = sandbox(clock=clock, quota=None, token_lifetime_s=100)
    client = api(sb, get_token(sb))
    clock.advance(99.9)
    assert client.get("/Persons").status_code == 200
    clock.advance(0.1)
    assert client.get("/Persons").status_code == 401


def test_revoke_invalidates_every_issued_token(sb: SandboxServer, api: Api) -> None:
    old = [get_token(sb), get_token(sb)]
    revoked = httpx.post(sb.url + "/_sandbox/revoke").json()
    assert revoked == {"revoked": 2}
    assert all(api(sb, t).get("/Vehicles").status_code == 401 for t in old)
    assert api(sb, get_token(sb)).get("/Vehicles").status_code == 200
    assert sb.revoke() == 1


def test_reset_clears_counters_faults_and_tokens(sb: SandboxServer, api: Api) -> None:
    token = get_token(sb)
    api(sb, token).get("/Vehicles")
    sb.add_faults(path="/Persons", responses=[{"status": 500}])
    assert httpx.post(sb.url + "/_sandbox/reset").json() == {"reset": True}
    stats = sb.stats()
    assert (stats["token_requests"], stats["calls"], stats["pending_faults"]) == (0, 0, 0)
    assert stats["log"] == []
    assert api(sb, token).get("/Vehicles").status_code == 401
    assert api(sb, get_token(sb)).get("/Persons").status_code == 200


# -- fleet endpoints -------------------------------------------------------------------


def test_vehicles_form_a_realistic_french_fleet(sb: SandboxServer, api: Api) -> None:
    vehicles = api(sb, get_token(sb)).get("/Vehicles").json()
    plates = [v["registrationNumber"] for v in vehicles]
    assert len(vehicles) == 60
    assert len(set(plates)) == 60
    assert all(PLATE_RE.match(p) and not p.startswith(("SS", "WW")) for p in plates)
    out = [v for v in vehicles if v["status"] == "OUT_FLEET"]
    assert len(out) == 6
    assert all(v["currentDriver"] is None for v in out)
    assert sum(v["currentDriver"] is not None for v in vehicles) == 48
    assert all(isinstance(v["mileage"], int) and v["brand"] and v["fuelType"] for v in vehicles)


def test_lists_can_be_wrapped(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    sb.configure(wrap_lists=True)
    assert len(client.get("/Vehicles").json()["items"]) == 60
    assert isinstance(client.get("/Persons").json()["items"], list)


def test_one_vehicle_by_plate(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    listed = client.get("/Vehicles").json()[3]
    plate = listed["registrationNumber"]
    assert client.get(f"/Vehicles/{plate}").json() == listed
    assert client.get(f"/vehicles/{plate.lower()}").json() == listed
    missing = client.get("/Vehicles/ZZ-999-ZZ")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_current_assignment(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    vehicles = client.get("/Vehicles").json()
    driven = next(v for v in vehicles if v["currentDriver"])
    answer = client.get(
        "/VehicleAssignments/current", params={"registrationNumber": driven["registrationNumber"]}
    ).json()
    assert answer["registrationNumber"] == driven["registrationNumber"]
    assert answer["driver"] == driven["currentDriver"]
    assert DATE_RE.match(answer["startDate"])
    missing_param = client.get("/VehicleAssignments/current")
    assert missing_param.status_code == 400
    assert "registrationNumber" in missing_param.json()["message"]
    unknown = {"registrationNumber": "ZZ-999-ZZ"}
    assert client.get("/VehicleAssignments/current", params=unknown).status_code == 404


def test_persons_list_and_create(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    persons = client.get("/Persons").json()
    assert any(p["isDriver"] for p in persons) and not all(p["isDriver"] for p in persons)
    assert all(re.match(r"^M\d{5}$", p["registrationNumber"]) for p in persons)
    assert all(p["email"].isascii() and "@" in p["email"] for p in persons)
    body = {"firstName": "Amélie", "lastName": "Poulain"}
    first, second = client.post("/Persons", json=body), client.post("/Persons", json=body)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert first.json()["email"] != second.json()["email"]
    assert len(client.get("/Persons").json()) == len(persons) + 2
    bad = client.post("/Persons", json={"firstName": "Amélie"})
    assert bad.status_code == 400
    assert bad.json()["field"] == "lastName"
    assert client.post("/Persons", content=b"not json").status_code == 400


def test_unknown_paths_and_methods_answer_json(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    unknown = client.get("/Fuel/Consumptions")
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "not_found"
    wrong_method = client.delete("/Vehicles")
    assert wrong_method.status_code == 405
    assert wrong_method.headers["content-type"] == "application/json"
    admin_wrong = httpx.get(sb.url + "/_sandbox/reset")
    assert admin_wrong.status_code == 405
    assert admin_wrong.json()["error"] == "method_not_allowed"


# -- trips ---------------------------------------------------------------------------


def test_trips_are_deterministic_and_split_cleanly(sandbox: MakeSandbox, api: Api) -> None:
    first, second = sandbox(quota=None), sandbox(quota=None)
    plate = generate_fleet(42, 60).plates(in_fleet_only=True)[0]
    whole = trips_query(f"{DAY}T00:00:00", "2026-11-27T00:00:00", plate)
    morning = trips_query(f"{DAY}T00:00:00", f"{DAY}T12:00:00", plate)
    evening = trips_query(f"{DAY}T12:00:00", "2026-11-27T00:00:00", plate)
    client_a, client_b = api(first, get_token(first)), api(second, get_token(second))
    trips = client_a.get("/Geolocation/Trips", params=whole).json()
    assert trips, "a weekday should have trips"
    assert client_b.get("/Geolocation/Trips", params=whole).json() == trips
    halves = [client_a.get("/Geolocation/Trips", params=q).json() for q in (morning, evening)]
    assert halves[0] + halves[1] == trips


def test_trip_shape(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    query = trips_query(f"{DAY}T00:00:00", "2026-11-27T00:00:00")
    trips = client.get("/Geolocation/Trips", params=query).json()
    assert len({t["registrationNumber"] for t in trips}) > 20
    for trip in trips:
        assert set(trip["driver"]) == {"registrationNumber", "firstName", "lastName"}
        assert trip["startPoint"]["date"].startswith(DAY)
        assert trip["endPoint"]["date"] > trip["startPoint"]["date"]
        assert re.search(r", \d{5} .+, France$", trip["endPoint"]["address"])
        assert 41 < trip["startPoint"]["latitude"] < 52
        assert trip["distance"] > 0 and 0 < trip["drivingTime"] <= trip["duration"]


def test_out_of_fleet_vehicles_have_no_trips(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    fleet = generate_fleet(42, 60)
    gone = next(v.registration_number for v in fleet.vehicles if v.status == "OUT_FLEET")
    query = trips_query(f"{DAY}T00:00:00", "2026-11-27T00:00:00", gone)
    response = client.get("/Geolocation/Trips", params=query)
    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize(
    ("start", "end", "needle"),
    [
        (f"{DAY}T00:00:00.000", f"{DAY}T10:00:00", "startDate"),
        (f"{DAY}T00:00:00", f"{DAY}T10:00:00Z", "endDate"),
        (DAY, f"{DAY}T10:00:00", "startDate"),
        (f"{DAY}T00:00:00", f"{DAY}T25:00:00", "endDate"),
        (f"{DAY}T10:00:00", f"{DAY}T09:00:00", "after startDate"),
        (f"{DAY}T00:00:00", "2026-11-27T00:00:01", "24 hours"),
    ],
)
def test_trip_window_validation(sb: SandboxServer, start: str, end: str, needle: str, api: Api) -> None:
    response = api(sb, get_token(sb)).get("/Geolocation/Trips", params=trips_query(start, end))
    assert response.status_code == 400
    assert needle in response.json()["message"]


def test_trips_of_unknown_plate_and_missing_dates(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    query = trips_query(f"{DAY}T00:00:00", f"{DAY}T10:00:00", "ZZ-999-ZZ")
    assert client.get("/Geolocation/Trips", params=query).status_code == 404
    missing = client.get("/Geolocation/Trips", params={"endDate": f"{DAY}T10:00:00"})
    assert (missing.status_code, missing.json()["field"]) == (400, "startDate")


def test_fleet_follows_seed_and_size(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    before = client.get("/Vehicles").json()
    sb.configure(seed=7, fleet_size=12)
    after = client.get("/Vehicles").json()
    assert len(after) == 12
    assert {v["registrationNumber"] for v in after}.isdisjoint(v["registrationNumber"] for v in before)
    assert [v.registration_number for v in generate_fleet(7, 12).vehicles] == [v["registrationNumber"] for v in after]


# -- quota ---------------------------------------------------------------------------


def test_quota_is_a_sliding_window(sandbox: MakeSandbox, api: Api) -> None:
    clock = FakeClock(start=0.0)
    sb = sandbox(clock=clock, quota="3/m")
    client = api(sb, get_token(sb))
    statuses = []
    for step in (0, 10, 10, 10):  # calls at t=0, 10, 20, 30
        clock.advance(step)
        statuses.append(client.get("/Persons"))
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[-1].headers["Retry-After"] == "30"
    clock.advance(30)  # t=60: the call at t=0 has left the window
    assert client.get("/Persons").status_code == 200
    clock.advance(1)  # t=61: calls at 10, 20, 60 are still inside
    refused = client.get("/Persons")
    assert (refused.status_code, refused.headers["Retry-After"]) == (429, "9")
    stats = sb.stats()
    assert (stats["accepted"], stats["rate_limited"], stats["quota_rejected"]) == (4, 2, 2)
    assert stats["max_in_window"] == 3


def test_quota_is_exact_under_concurrency(sandbox: MakeSandbox) -> None:
    sb = sandbox(clock=FakeClock(), quota="5/s")  # a frozen clock: one window
    token = get_token(sb)

    def call(_: int) -> int:
        return httpx.get(sb.url + "/Vehicles", headers={"Authorization": f"Bearer {token}"}).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(call, range(20)))
    assert sorted(statuses) == [200] * 5 + [429] * 15
    assert sb.stats()["max_in_window"] == 5


def test_quota_is_per_client(sandbox: MakeSandbox, api: Api) -> None:
    other = ("erp", "erp-secret")
    sb = sandbox(clock=FakeClock(), quota="2/m", clients=dict([CLIENT, other]))
    first, second = api(sb, get_token(sb)), api(sb, get_token(sb, other))
    assert [first.get("/Persons").status_code for _ in range(3)] == [200, 200, 429]
    assert [second.get("/Persons").status_code for _ in range(3)] == [200, 200, 429]
    clients = {entry["client_id"] for entry in sb.stats()["log"]}
    assert clients == {"sandbox-client", "erp"}


def test_quota_without_retry_after(sandbox: MakeSandbox, api: Api) -> None:
    sb = sandbox(clock=FakeClock(), quota="1/h", retry_after=False)
    client = api(sb, get_token(sb))
    assert client.get("/Persons").status_code == 200
    refused = client.get("/Persons")
    assert refused.status_code == 429
    assert "Retry-After" not in refused.headers


def test_the_quota_is_stated_in_either_header_style_on_every_answer(sandbox: MakeSandbox, api: Api) -> None:
    other = ("erp", "erp-secret")
    sb = sandbox(
        clock=FakeClock(),
        quota="2/m",
        clients=dict([CLIENT, other]),
        rate_limit_headers="x",
        client_rate_limit_headers={"erp": "ietf"},
    )
    x_style, ietf = api(sb, get_token(sb)), api(sb, get_token(sb, other))
    answers = [x_style.get("/Persons") for _ in range(3)]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
    assert (
        answers[2].status_code == 429 and answers[2].headers["X-RateLimit-Reset"] == answers[2].headers["Retry-After"]
    )
    assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"2"} and "RateLimit" not in answers[0].headers
    first = ietf.get("/Persons")
    assert first.headers["RateLimit-Policy"] == '"default";q=2;w=60'
    assert first.headers["RateLimit"] == '"default";r=1;t=60'
    sb.configure(rate_limit_headers="none", client_rate_limit_headers={})
    assert not any(name.lower().startswith(("ratelimit", "x-ratelimit")) for name in x_style.get("/Persons").headers)


def test_sandbox_cli_takes_the_header_style() -> None:
    assert config_from_args(_parser().parse_args(["--rate-limit-headers", "ietf"])).rate_limit_headers == "ietf"
    with pytest.raises(ValidationError):
        SandboxConfig(rate_limit_headers="y")  # type: ignore[arg-type]


def test_max_in_window_counts_only_accepted_calls() -> None:
    log = [
        {"t": t, "accepted": ok} for t, ok in [(0, True), (1, False), (30, True), (59.9, True), (60, True), (61, True)]
    ]
    assert max_in_window(log, 60.0) == 4
    assert max_in_window(log, 1.0) == 2  # 59.9 and 60
    assert max_in_window([], 60.0) == 0


# -- faults, errors, latency -------------------------------------------------------------


def test_scripted_faults_are_consumed_in_order(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    plate = generate_fleet(42, 60).plates()[0]
    path = f"/Vehicles/{plate}"
    reply = httpx.post(
        sb.url + "/_sandbox/faults",
        json={"path": path, "responses": [{"status": 503, "headers": {"Retry-After": "2"}}]},
    )
    assert reply.json() == {"pending": 1}
    first, second = client.get(path), client.get(path)
    assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
    assert first.json() == {"error": "scripted_fault", "status": 503}
    assert (second.status_code, second.json()["registrationNumber"]) == (200, plate)


def test_faults_match_method_and_prefix(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    redirect = {"status": 302, "headers": {"Location": "https://evil.example/steal"}, "body": None}
    sb.add_faults(path="/Persons", method="POST", responses=[{"status": 500, "body": {"x": 1}}])
    sb.add_faults(path="/Geolocation/*", responses=[redirect])
    assert client.get("/Persons").status_code == 200
    failed = client.post("/Persons", json={"firstName": "A", "lastName": "B"})
    assert (failed.status_code, failed.json()) == (500, {"x": 1})
    moved = client.get("/Geolocation/Trips")
    assert (moved.status_code, moved.headers["Location"]) == (302, "https://evil.example/steal")
    assert sb.stats()["pending_faults"] == 0


def test_faults_apply_after_auth(sb: SandboxServer, api: Api) -> None:
    sb.add_faults(path="/Persons", responses=[{"status": 503}])
    assert api(sb).get("/Persons").status_code == 401
    assert api(sb, get_token(sb)).get("/Persons").status_code == 503


def test_slow_fault_forces_a_client_timeout(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    sb.add_faults(path="/Vehicles", responses=[{"status": 200, "body": [], "delay_ms": 800}])
    with pytest.raises(httpx.ReadTimeout):
        client.get("/Vehicles", timeout=0.1)
    assert sb.stats()["calls"] == 1


def test_invalid_fault_is_rejected_naming_the_field(sb: SandboxServer) -> None:
    reply = httpx.post(sb.url + "/_sandbox/faults", json={"path": "/Vehicles", "responses": [{"status": 99}]})
    assert reply.status_code == 422
    assert "responses.0.status" in reply.json()["message"]


def test_random_errors(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    sb.configure(error_rate=1.0, error_status=500)
    assert {client.get("/Persons").status_code for _ in range(5)} == {500}
    sb.configure(error_rate=0.0)
    assert client.get("/Persons").status_code == 200
    assert sb.stats()["by_status"] == {"500": 5, "200": 1}


def test_latency_is_added(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    sb.configure(latency_ms=200)
    started = datetime.now()
    assert client.get("/Persons").status_code == 200
    assert datetime.now() - started >= timedelta(milliseconds=200)


# -- admin ---------------------------------------------------------------------------


def test_config_endpoint_reads_and_updates_knobs(sb: SandboxServer) -> None:
    url = sb.url + "/_sandbox/config"
    current = httpx.get(url).json()
    assert current["quota"] is None
    assert current["clients"] == {"sandbox-client": "***"}
    updated = httpx.post(url, json={"quota": "10/s", "latency_ms": 5})
    assert (updated.json()["quota"], updated.json()["latency_ms"]) == ("10/s", 5)
    for bad, field in [({"quota": "ten"}, "quota"), ({"error_rate": 2}, "error_rate"), ({"nope": 1}, "nope")]:
        reply = httpx.post(url, json=bad)
        assert reply.status_code == 422
        assert field in reply.json()["message"]
    assert httpx.get(url).json()["quota"] == "10/s"


def test_configure_validates(sb: SandboxServer) -> None:
    with pytest.raises(ValidationError):
        sb.configure(quota="30 per minute")
    assert sb.state.config.quota is None


def test_stats_log_entries(sb: SandboxServer, api: Api) -> None:
    client = api(sb, get_token(sb))
    client.get("/Persons")
    entry = httpx.get(sb.url + "/_sandbox/stats").json()["log"][0]
    assert entry["method"] == "GET" and entry["path"] == "/Persons"
    assert (entry["status"], entry["client_id"]) == (200, "sandbox-client")
    assert isinstance(entry["t"], float)


def test_logs_never_contain_tokens_or_secrets(sb: SandboxServer, caplog: pytest.LogCaptureFixture, api: Api) -> None:
    caplog.set_level(logging.DEBUG)
    token = get_token(sb)
    httpx.post(
        sb.token_url,
        data={"client_id": CLIENT[0], "client_secret": "oops-secret", "grant_type": "client_credentials"},
    )
    api(sb, token).get("/Persons")
    assert "sandbox-client" in caplog.text
    for secret in (token, CLIENT[1], "oops-secret"):
        assert secret not in caplog.text


def test_create_app_exposes_its_state() -> None:
    app = create_app(SandboxConfig(quota="10/s", fleet_size=5))
    assert app.state.sandbox.config.quota == "10/s"
    assert len(app.state.sandbox.fleet.vehicles) == 5


# -- CLI -----------------------------------------------------------------------------


@pytest.mark.processes
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_main_serves_until_signalled(stop_signal: signal.Signals) -> None:
    code = "import sys; from optimum_bridge.sandbox import main; sys.exit(main(sys.argv[1:]))"
    args = ["--port", "0", "--quota", "5/m", "--fleet-size", "10"]
    command = [sys.executable, "-c", code, *args]
    with subprocess.Popen(command, cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # the one line printed once the server listens
            match = re.search(r"API (http://127\.0\.0\.1:\d+)", line)
            assert match, line
            assert "sandbox-secret" not in line
            data = {"client_id": CLIENT[0], "client_secret": CLIENT[1], "grant_type": "client_credentials"}
            token = httpx.post(match.group(1) + "/connect/token", data=data).json()["access_token"]
            vehicles = httpx.get(match.group(1) + "/Vehicles", headers={"Authorization": f"Bearer {token}"})
            assert len(vehicles.json()) == 10
            proc.send_signal(stop_signal)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_main_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quota", "lots"]) == 2
    assert "quota" in capsys.readouterr().err
