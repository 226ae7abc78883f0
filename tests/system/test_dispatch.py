"""Dispatch without polling (spec §10a): real workers, a private Redis, the sandbox; loose bounds.

The figures are in ``python -m bench idle`` (Redis load with nothing queued) and
``python -m bench overhead`` (cost per call).
"""

from __future__ import annotations

import itertools
import statistics
import textwrap
import time
from pathlib import Path

from optimum_bridge import BridgeClient
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import bridge_env, settings_from, wait_finished, wait_until

PLATES = generate_fleet(42, 60).plates()


def vehicle(i: int, **extra: object) -> dict[str, object]:
    return {"method": "GET", "path": f"/Vehicles/{PLATES[i % len(PLATES)]}", **extra}


def many_accounts(directory: Path, sandbox_url: str, count: int) -> Path:
    path = directory / "accounts.toml"
    blocks = [
        textwrap.dedent(
            f"""
            [accounts.a{i:04d}]
            client_id = "client-{i}"
            client_secret_env = "SHARED_SECRET"
            environment = "sandbox"
            api_url = "{sandbox_url}"
            token_url = "{sandbox_url}/connect/token"
            rate_limit = "30/m"
            """
        )
        for i in range(count)
    ]
    path.write_text("".join(blocks))
    return path


def test_a_job_on_an_idle_account_starts_without_waiting_for_a_poll(redis_server, prefix, sandbox, workers):
    sb = sandbox()
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="100/s")
    workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    latencies = []
    for i in range(15):
        job_id = client.submit(vehicle(i))
        wait_finished(client, [job_id], timeout=10, interval=0.05)
        job = client.get(job_id)
        assert job.started_at is not None
        latencies.append((job.started_at - job.submitted_at).total_seconds() * 1000)
    median = statistics.median(latencies)
    print(f"\nsubmission -> call start on an idle account: p50 {median:.1f} ms, max {max(latencies):.1f} ms")
    # A timer would make a job wait for the next look; the submission wakes a dispatcher at once.
    assert median < 40


def test_a_finished_job_frees_its_thread_for_the_next_at_once(redis_server, prefix, sandbox, workers):
    sb = sandbox(latency_ms=20)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    workers(env, concurrency=1)  # one thread: every job but the first waits for the one before it to finish
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([vehicle(i) for i in range(12)])
    wait_finished(client, ids, timeout=30, interval=0.1)
    spans = sorted((job.started_at, job.finished_at) for job in map(client.get, ids))
    gaps = [(start - end).total_seconds() * 1000 for (_, end), (start, _) in itertools.pairwise(spans)]
    median = statistics.median(gaps)
    print(f"\none thread, 12 jobs: a job's end -> the next one's call start p50 {median:.1f} ms, max {max(gaps):.1f}")
    assert median < 100  # no timer: the finished job wakes a dispatcher


def test_200_idle_accounts_put_a_bounded_load_on_redis(private_redis, sandbox, workers, tmp_path):
    server = private_redis()
    sb = sandbox()
    env = bridge_env(
        server.url,
        "idle:",
        sb,
        BRIDGE_ACCOUNTS_FILE=str(many_accounts(tmp_path, sb.url, 200)),
        SHARED_SECRET="s3cret-shared-value",
    )
    workers(env, concurrency=4)
    wait_until(lambda: server.client().hlen("idle:quotas") >= 200, timeout=20, what="the quotas published")
    time.sleep(2.0)  # the load pattern: past the start, into the steady idle state (nothing to await)
    before, started = server.command_calls(), time.monotonic()
    time.sleep(5.0)
    after, elapsed = server.command_calls(), time.monotonic() - started
    per_s = (sum(after.values()) - sum(before.values()) - 1) / elapsed  # less the INFO of ``before``
    print(f"\none worker, 200 accounts, nothing queued: {per_s:.1f} Redis commands/s")
    assert server.client().zcard("idle:openapi:due") == 0  # no document fetched for accounts nobody uses
    assert per_s <= 30  # spec: <= 20 per worker process; polling each account cost ~12,000/s at 100
