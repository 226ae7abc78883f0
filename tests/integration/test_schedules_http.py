"""Schedules over HTTP (spec §15, §12a): admin keys, one-line refusals, the accounts file's schedules read-only,
a manual run's batch, the next ticks and the finish forecast. Real HTTP over loopback to an in-process ingress."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from optimum_bridge.ingress.ui.security import csrf_token
from tests.system.test_ingress import local_settings, problem_of, served_ingress  # noqa: F401  (the fixture)

ADMIN = {"Authorization": "Bearer admin-key"}
FILE_ADMIN = {"Authorization": "Bearer ops-key"}
PLAIN = {"Authorization": "Bearer key-two"}
LIMITED = {"Authorization": "Bearer acme-only"}
HOURLY = {"every": "1h", "timezone": "Europe/Paris", "operations": [{"method": "GET", "path": "/Vehicles"}]}


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


ACCOUNTS = f"""
[accounts.acme]
client_id = "acme"
client_secret_env = "ACME_SECRET"
environment = "sandbox"

[api_keys.ops]
sha256 = "{_digest("ops-key")}"
admin = true

[api_keys.acme]
sha256 = "{_digest("acme-only")}"
accounts = ["acme"]

[schedules.nightly]
cron = "0 2 * * *"
timezone = "Europe/Paris"
account = "acme"
operations = [{{ method = "GET", path = "/Vehicles" }}]
"""


@pytest.fixture
def http(
    redis_server: Any,
    prefix: str,
    served_ingress: Any,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    monkeypatch.setenv("ACME_SECRET", "acme-secret")
    (tmp_path / "accounts.toml").write_text(ACCOUNTS)
    settings = local_settings(
        redis_server.url,
        prefix,
        BRIDGE_ADMIN_KEYS="admin-key",
        BRIDGE_ACCOUNTS_FILE=str(tmp_path / "accounts.toml"),
        OPTIMUM_ENVIRONMENT="sandbox",
        OPTIMUM_RATE_LIMIT="30/m",
    )
    return served_ingress(settings)


def test_only_an_admin_key_changes_schedules(http: httpx.Client) -> None:
    assert problem_of(http.put("/v1/schedules/hourly", json=HOURLY, headers=PLAIN), 403)["detail"].startswith(
        "this needs an admin key"
    )
    assert http.put("/v1/schedules/hourly", json=HOURLY, headers=ADMIN).status_code == 201
    assert http.put("/v1/schedules/hourly", json=HOURLY, headers=FILE_ADMIN).status_code == 200  # admin = true
    for method, url, body in [
        ("PATCH", "/v1/schedules/hourly", {"paused": True}),
        ("POST", "/v1/schedules/hourly:run", None),
        ("DELETE", "/v1/schedules/hourly", None),
    ]:
        assert http.request(method, url, json=body, headers=PLAIN).status_code == 403, method
    assert http.get("/v1/schedules/hourly", headers=PLAIN).status_code == 200  # reading needs any key


def test_a_template_error_is_refused_at_save_in_one_line(http: httpx.Client) -> None:
    bad = {**HOURLY, "operations": [{"method": "GET", "path": "/Vehicles", "query": {"since": "{{ tik }}"}}]}
    problem = problem_of(http.put("/v1/schedules/hourly", json=bad, headers=ADMIN), 422)
    assert problem["detail"] == "operations[0].query.since: 'tik' is undefined"
    unknown = problem_of(http.put("/v1/schedules/hourly", json={**HOURLY, "account": "nope"}, headers=ADMIN), 422)
    assert unknown["detail"] == "account: unknown account 'nope'"
    assert http.get("/v1/schedules/hourly", headers=ADMIN).status_code == 404  # nothing saved


def test_a_schedule_lists_its_next_ticks_and_a_manual_run_makes_its_batch(http: httpx.Client) -> None:
    created = http.put("/v1/schedules/hourly", json={**HOURLY, "metadata": {"erp": "acme"}}, headers=ADMIN).json()
    ticks = created["next_ticks"]
    assert len(ticks) == 5
    assert ticks[0]["utc"].endswith("Z") and ticks[0]["local"].endswith(("+01:00", "+02:00"))
    assert created["estimated_done_at"] is None  # no run yet: no size to forecast from
    run = http.post("/v1/schedules/hourly:run", headers=ADMIN)
    assert run.status_code == 202, run.text
    batch = http.get(f"/v1/batches/{run.json()['outcome']}", headers=ADMIN).json()
    assert batch["total"] == 1
    assert batch["metadata"]["schedule"] == "hourly" and batch["metadata"]["erp"] == "acme"
    shown = http.get("/v1/schedules/hourly", headers=ADMIN).json()
    assert shown["last_run"]["batch_id"] == batch["id"]
    assert shown["estimated_done_at"] is not None and shown["warning"] is None
    paused = http.patch("/v1/schedules/hourly", json={"paused": True}, headers=ADMIN).json()
    assert paused["paused"] is True
    assert problem_of(http.patch("/v1/schedules/hourly", json={"paused": "yes"}, headers=ADMIN), 422)["detail"] == (
        "paused: Input should be a valid boolean"
    )
    assert http.delete("/v1/schedules/hourly", headers=ADMIN).status_code == 204
    assert http.get("/v1/schedules/hourly", headers=ADMIN).status_code == 404


def test_a_schedule_whose_runs_outlast_its_interval_says_so(http: httpx.Client) -> None:
    often = {"every": "5s", "operations": [{"method": "GET", "path": f"/Vehicles/AB-{i:03d}-CD"} for i in range(10)]}
    http.put("/v1/schedules/often", json=often, headers=ADMIN)
    http.post("/v1/schedules/often:run", headers=ADMIN)
    shown = http.get("/v1/schedules/often", headers=ADMIN).json()
    assert shown["warning"].startswith("a run of 10 calls takes 2")  # 10 slots at 30/m: ~20 s, ticks 5 s apart
    assert shown["warning"].endswith("longer than the 5 s between ticks")


def test_the_accounts_file_schedules_are_listed_and_read_only(http: httpx.Client) -> None:
    [nightly] = http.get("/v1/schedules", headers=ADMIN).json()
    assert (nightly["name"], nightly["origin"]) == ("nightly", "file")
    assert [tick["local"][11:19] for tick in nightly["next_ticks"]] == ["02:00:00"] * 5
    assert problem_of(http.put("/v1/schedules/nightly", json=HOURLY, headers=ADMIN), 409)["detail"].startswith(
        "schedule 'nightly' comes from the accounts file"
    )
    assert http.delete("/v1/schedules/nightly", headers=ADMIN).status_code == 409
    assert http.patch("/v1/schedules/nightly", json={"paused": True}, headers=ADMIN).json()["paused"] is True
    http.put("/v1/schedules/hourly", json=HOURLY, headers=ADMIN)  # on the default account
    assert [s["name"] for s in http.get("/v1/schedules", headers=LIMITED).json()] == ["nightly"]
    assert http.get("/v1/schedules/hourly", headers=LIMITED).status_code == 404


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{key}".encode()).decode()}


def test_ui_shows_schedules_with_their_forecast_and_an_admin_steers_them(http: httpx.Client) -> None:
    often = {"every": "5s", "operations": [{"method": "GET", "path": f"/Vehicles/AB-{i:03d}-CD"} for i in range(10)]}
    http.put("/v1/schedules/often", json=often, headers=ADMIN)
    page = http.get("/ui", headers=_basic("key-two")).text
    assert 'id="schedule-nightly"' in page and 'id="schedule-often"' in page
    assert "<code>0 2 * * *</code>" in page and "Europe/Paris" in page
    assert 'action="/ui/schedules/often/run"' not in page  # not an admin key: no buttons
    admin = {**_basic("admin-key")}
    token = csrf_token("admin-key")
    assert 'action="/ui/schedules/often/run"' in http.get("/ui", headers=admin).text
    ran = http.post("/ui/schedules/often/run", data={"csrf": token}, headers=admin, follow_redirects=False)
    assert ran.headers["location"] == "/ui?note=schedule-run&id=often"
    page = http.get("/ui", headers=admin).text
    assert "longer than the 5 s between ticks" in page  # the warning, from the run's size at 30/m
    paused = http.post("/ui/schedules/often/pause", data={"csrf": token}, headers=admin, follow_redirects=False)
    assert paused.status_code == 303
    assert 'id="schedule-often" data-paused="true"' in http.get("/ui", headers=admin).text
    plain = http.post("/ui/schedules/often/resume", data={"csrf": csrf_token("key-two")}, headers=_basic("key-two"))
    assert plain.status_code == 403
