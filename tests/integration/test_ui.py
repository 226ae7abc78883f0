"""The dashboard at ``/ui`` (spec §14), in-process against a real Redis: auth, contents, escaping, CSRF, accounts.

The browser test (``tests/system/test_ui_browser.py``) drives the same pages in a real
Chromium against workers and the sandbox; here the ASGI app is called directly
and Redis is written as a producer or a worker would.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from optimum_bridge import BridgeClient
from optimum_bridge.callbacks.deliveries import DeliveryStore
from optimum_bridge.callbacks.sender import dead_letter
from optimum_bridge.ingress.app import create_app
from optimum_bridge.ingress.ui.chart import layout
from optimum_bridge.ingress.ui.data import recent_jobs
from optimum_bridge.ingress.ui.security import csrf_token
from optimum_bridge.keys import RECENT_BATCHES, RECENT_JOBS, RECENT_JOBS_TRIM_PERIOD, Keys
from optimum_bridge.process.metrics import Metrics
from optimum_bridge.quota.forecast import Backlog
from optimum_bridge.quota.headers import Statement
from optimum_bridge.quota.limiter import RateLimiter
from optimum_bridge.quota.rate import RateLimit
from tests.support import settings_from
from tests.system.test_accounts import two_accounts_env, vehicle
from tests.system.test_ingress import InProcess, ingress, local_settings  # noqa: F401  (the fixture)

XSS = "<script>alert('owned')</script>"
HOOK = {"url": "http://127.0.0.1:9/hook"}


def basic(key: str, user: str = "ops") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


AUTH = basic("key-two")
TOKEN = csrf_token("key-two")


def ui_settings(redis_url: str, prefix: str):
    extra = {"OPTIMUM_RATE_LIMIT": "30/m", "OPTIMUM_ENVIRONMENT": "sandbox", "BRIDGE_CALLBACK_ALLOW_PRIVATE": "true"}
    return local_settings(redis_url, prefix, **extra)


def post(http: httpx.Client, path: str, data: dict[str, str], *, headers: dict[str, str] | None = None):
    return http.post(path, data=data, headers={**AUTH, **(headers or {})}, follow_redirects=False)


def dead_letter_for(client: BridgeClient, subject: str) -> None:
    store = DeliveryStore(client.redis, Keys(client.settings.key_prefix))
    letter = dead_letter(subject, HOOK["url"], 3, "HTTP 500", failed_at="2026-12-02T12:00:00+00:00")
    store.settle(subject, "", "dead", dead_letter=letter)


def test_the_dashboard_needs_an_api_key_as_basic_password(redis_server, prefix, ingress):  # noqa: F811
    http = ingress(ui_settings(redis_server.url, prefix))
    for headers in ({}, basic("not-a-key"), {"Authorization": "Bearer key-two"}, {"Authorization": "Basic !!"}):
        answer = http.get("/ui", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert http.get("/ui/operations/abc").status_code == 401
    assert http.post("/ui/dead-letters/replay", data={"subject": "x"}).status_code == 401
    assert http.get("/ui", headers=basic("key-one", user="anyone")).status_code == 200
    assert http.get("/ui/static/ui.css").headers["content-type"].startswith("text/css")  # served here


def test_the_dashboard_shows_quota_lanes_chart_and_escapes_metadata(redis_server, prefix, ingress):  # noqa: F811
    settings = ui_settings(redis_server.url, prefix)
    http = ingress(settings)
    client = BridgeClient(settings)
    client.submit_many([{**vehicle(i, "default"), "metadata": {"note": XSS}} for i in range(3)])
    urgent = client.submit({**vehicle(9, "default"), "priority": "urgent"})
    batch = client.submit_batch([vehicle(10 + i, "default") for i in range(4)], metadata={"run": XSS})
    client.redis.zadd(Keys(prefix).limiter_log(), {"a": int(client.redis.time()[0]) * 1000})
    Metrics(client.redis, Keys(prefix)).for_account("default").observe_call(200, 0.1)

    answer = http.get("/ui", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert "30/m (configured) · learned: —" in page
    assert re.search(r'data-test="in-window">1 / 30<', page)
    assert re.search(r'data-lane="urgent"><td>urgent</td><td class="num">1</td>', page)
    assert re.search(r'data-lane="normal"><td>normal</td><td class="num">7</td>', page)
    assert "1 in all" in page  # the per-minute chart counted the call
    assert f"batch-{batch.id}" in page and "0/4 (0%)" in page
    assert f'href="/ui/operations/{urgent}"' in page
    assert '<meta http-equiv="refresh" content="5; url=/ui?refresh=5">' in page
    assert "<script" not in page.lower()  # neither ours (there is none) nor the metadata's
    assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in page
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]

    job = http.get(f"/ui/operations/{client.submit({**vehicle(1, 'default'), 'metadata': {'x': XSS}})}", headers=AUTH)
    assert job.status_code == 200 and "<script" not in job.text.lower() and "&lt;script&gt;" in job.text
    assert 'id="job-shared">Served by the call of' in job.text  # the same read as one of the first three
    assert http.get("/ui/operations/0123456789abcdef", headers=AUTH).status_code == 404


def test_a_post_without_the_token_or_from_another_site_is_refused_and_changes_nothing(
    redis_server,
    prefix,
    ingress,  # noqa: F811
):
    settings = ui_settings(redis_server.url, prefix)
    http = ingress(settings)
    client = BridgeClient(settings)
    job_id = client.submit(vehicle(0, "default"))
    path = f"/ui/operations/{job_id}/cancel"
    refused = [
        post(http, path, {}),
        post(http, path, {"csrf": "0" * 64}),
        post(http, path, {"csrf": csrf_token("key-one")}),  # another key's token
        post(http, path, {"csrf": TOKEN}, headers={"Origin": "https://evil.example"}),
        post(http, path, {"csrf": TOKEN}, headers={"Origin": "null"}),
        post(http, path, {"csrf": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"}),
        post(http, path, {"csrf": TOKEN}, headers={"Sec-Fetch-Site": "same-site"}),
        post(http, f"/ui/operations/{job_id}/priority", {"priority": "urgent"}),
    ]
    assert [answer.status_code for answer in refused] == [403] * len(refused)
    assert client.get(job_id).status == "queued" and client.get(job_id).priority == "normal"
    same = {"Origin": "http://ingress.test", "Sec-Fetch-Site": "same-origin"}
    answer = post(http, path, {"csrf": TOKEN}, headers=same)
    assert answer.status_code == 303 and answer.headers["location"] == f"/ui?note=cancelled&id={job_id}"
    assert client.get(job_id).status == "cancelled"
    assert f"Job {job_id} cancelled." in http.get(answer.headers["location"], headers=AUTH).text


def test_the_buttons_cancel_move_cancel_a_batch_and_replay(redis_server, prefix, ingress):  # noqa: F811
    settings = ui_settings(redis_server.url, prefix)
    http = ingress(settings)
    client = BridgeClient(settings)
    job_id = client.submit(vehicle(0, "default"))
    assert post(http, f"/ui/operations/{job_id}/priority", {"csrf": TOKEN, "priority": "bulk"}).status_code == 303
    assert client.get(job_id).priority == "bulk"
    assert post(http, f"/ui/operations/{job_id}/priority", {"csrf": TOKEN, "priority": "nope"}).status_code == 422
    cancelled = post(http, f"/ui/operations/{job_id}/cancel", {"csrf": TOKEN, "refresh": "2"})
    assert cancelled.headers["location"] == f"/ui?note=cancelled&id={job_id}&refresh=2"  # the page's period kept
    again = post(http, f"/ui/operations/{job_id}/cancel", {"csrf": TOKEN})
    assert again.headers["location"] == f"/ui?note=not-waiting&id={job_id}"  # finished: nothing changed

    batch = client.submit_batch([vehicle(i, "default") for i in range(5)])
    assert post(http, f"/ui/batches/{batch.id}/cancel", {"csrf": TOKEN}).status_code == 303
    status = client.get_batch(batch.id)
    assert status.counts.cancelled == 5 and status.status == "done"
    assert "5/5 (100%)" in http.get("/ui", headers=AUTH).text

    hooked = client.submit({**vehicle(1, "default"), "callback": HOOK})
    dead_letter_for(client, hooked)
    page = http.get("/ui", headers=AUTH).text
    assert f'data-subject="{hooked}"' in page and "HTTP 500" in page
    answer = post(http, "/ui/dead-letters/replay", {"csrf": TOKEN, "subject": hooked})
    assert answer.headers["location"] == f"/ui?note=replayed&id={hooked}"
    assert client.redis.hlen(Keys(prefix).dead_letters) == 0
    assert client.redis.hget(Keys(prefix).job(hooked), "cb") == b"pending"
    assert f'data-subject="{hooked}"' not in http.get("/ui", headers=AUTH).text


BETA_KEY = "ui-key-of-beta-only-0123456789"


def test_a_key_limited_to_one_account_sees_nothing_of_another(redis_server, prefix, sandbox, tmp_path: Path):
    env = {**two_accounts_env(redis_server.url, prefix, sandbox(quota=None), tmp_path), "BRIDGE_API_KEYS": "all-key-0"}
    accounts = Path(env["BRIDGE_ACCOUNTS_FILE"])
    digest = hashlib.sha256(BETA_KEY.encode()).hexdigest()
    accounts.write_text(accounts.read_text() + f'\n[api_keys.erp]\nsha256 = "{digest}"\naccounts = ["beta"]\n')
    settings = settings_from(env)
    client = BridgeClient(settings)
    a_job = client.submit({**vehicle(0, "acme"), "metadata": {"who": "acme-marker"}, "callback": HOOK})
    a_batch = client.submit_batch([vehicle(1, "acme")], metadata={"who": "acme-marker"})
    b_job = client.submit({**vehicle(2, "beta"), "metadata": {"who": "beta-marker"}})
    dead_letter_for(client, a_job)
    beta, token = basic(BETA_KEY), csrf_token(BETA_KEY)
    with httpx.Client(transport=InProcess(create_app(settings)), base_url="http://ingress.test") as http:
        page = http.get("/ui", headers=beta).text
        assert "beta-marker" in page and b_job in page and "Account <code>beta</code>" in page
        for secret in ("acme", a_job, a_batch.id):
            assert secret not in page, secret
        assert http.get(f"/ui/operations/{a_job}", headers=beta).status_code == 404
        for path, data in (
            (f"/ui/operations/{a_job}/cancel", {}),
            (f"/ui/operations/{a_job}/priority", {"priority": "urgent"}),
            (f"/ui/batches/{a_batch.id}/cancel", {}),
            ("/ui/dead-letters/replay", {"subject": a_job}),
        ):
            answer = http.post(path, data={"csrf": token, **data}, headers=beta, follow_redirects=False)
            assert answer.status_code == 404, path
        assert client.get(a_job).status == "queued" and client.get(a_job).priority == "normal"
        assert client.get_batch(a_batch.id).counts.cancelled == 0
        assert client.redis.hlen(Keys(prefix).dead_letters) == 1
        everything = http.get("/ui", headers=basic("all-key-0")).text
        assert "acme-marker" in everything and "beta-marker" in everything and f'data-subject="{a_job}"' in everything


def test_the_indexes_of_recent_jobs_and_batches_are_bounded(redis_server, prefix):
    client = BridgeClient(ui_settings(redis_server.url, prefix))
    ids = client.submit_many([vehicle(i, "default") for i in range(RECENT_JOBS + 30)])
    recent = [member.decode() for member in client.redis.zrevrange(Keys(prefix).recent_jobs(), 0, -1)]
    assert recent == ids[::-1][:RECENT_JOBS]
    batches = [client.submit_batch([vehicle(i, "default")]).id for i in range(RECENT_BATCHES + 5)]
    indexed = {member.decode() for member in client.redis.zrange(Keys(prefix).recent_batches(), 0, -1)}
    assert indexed == set(batches[-RECENT_BATCHES:])


def test_the_index_of_recent_jobs_is_trimmed_once_a_period_and_never_loses_the_latest(redis_server, prefix):
    """submit.lua trims when a seq is a multiple of the period (issue 17), not at every job: in between
    the index may hold up to period - 1 more, never fewer than the latest ``RECENT_JOBS``."""
    client = BridgeClient(ui_settings(redis_server.url, prefix))
    ids: list[str] = []
    for round_ in range((RECENT_JOBS + 2 * RECENT_JOBS_TRIM_PERIOD) // 7):  # 7: multiples land inside a call
        ids += client.submit_many([vehicle(7 * round_ + i, "default") for i in range(7)])
        recent = [member.decode() for member in client.redis.zrevrange(Keys(prefix).recent_jobs(), 0, -1)]
        assert len(recent) <= RECENT_JOBS + RECENT_JOBS_TRIM_PERIOD - 1
        assert recent[:RECENT_JOBS] == ids[::-1][:RECENT_JOBS]
    assert len(recent) > RECENT_JOBS  # not trimmed at every call


def test_a_job_waiting_on_a_shared_call_is_listed_running_while_the_call_runs(redis_server, prefix):
    client = BridgeClient(ui_settings(redis_server.url, prefix))
    keys = Keys(prefix)
    leader, follower = client.submit_many([vehicle(1, "default")] * 2)

    def listed() -> dict[str, str]:
        return {row.id: state for state, rows in recent_jobs(client.redis, keys, ["default"]).items() for row in rows}

    assert listed() == {leader: "queued", follower: "queued"} and client.get(follower).coalesced_with == leader
    client.redis.hset(keys.job(leader), "status", "running")  # what a worker's claim writes
    assert listed() == {leader: "running", follower: "running"}
    assert not any(row.waiting for row in recent_jobs(client.redis, keys, ["default"])["running"])  # no buttons


@pytest.mark.parametrize(("counts", "quota"), [([0] * 60, 30.0), ([5, 40, 0] + [10] * 57, 30.0), ([], 1.0)])
def test_the_chart_scales_to_the_busiest_minute_or_the_quota(counts, quota):
    chart = layout(counts, quota)
    assert chart.top == max([*counts, round(quota), 1]) and chart.total == sum(counts)
    assert all(chart.height - chart.bottom - 1e-6 <= bar.y + bar.height <= chart.base_y + 0.1 for bar in chart.bars)
    assert 0 <= chart.quota_y <= chart.base_y
    assert [bar.minutes_ago for bar in chart.bars] == list(range(len(counts) - 1, -1, -1))


def test_the_backlog_forecast_puts_each_lane_after_the_higher_ones():
    backlog = Backlog(now_ms=0, next_slot_ms=1000, interval_ms=500, waiting={"urgent": 2, "normal": 3, "bulk": 0})
    assert backlog.last_start("urgent") == datetime.fromtimestamp(1.5, UTC)  # next slot + 1 interval
    assert backlog.last_start("normal") == datetime.fromtimestamp(3.0, UTC)  # after the 2 urgent: + 4 intervals
    assert backlog.last_start("bulk") is None


def test_the_dashboard_and_metrics_show_the_learned_limit_and_why(redis_server, prefix, ingress):  # noqa: F811
    settings = ui_settings(redis_server.url, prefix)
    http = ingress(settings)
    RateLimiter(redis_server.client(), Keys(prefix), RateLimit.parse("30/m")).observe(Statement("x", 20))
    page = http.get("/ui", headers=AUTH).text
    assert "30/m (configured) · learned: 20 (headers: X-RateLimit-Limit 20)" in page
    assert re.search(r'data-test="in-window">0 / 20<', page)  # the limit in force
    metrics = http.get("/metrics").text
    assert 'optimum_bridge_account_rate_limit{account="default"} 20.0' in metrics
    assert 'optimum_bridge_account_rate_limit_configured{account="default"} 30.0' in metrics
