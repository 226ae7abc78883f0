"""The ``optimum-bridge`` command as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from optimum_bridge import BridgeClient
from optimum_bridge.cli import _split_pool
from optimum_bridge.cli.progress import PlainProgress, describe, open_progress
from optimum_bridge.clock import Clock
from optimum_bridge.schemas import BatchCounts, BatchStatus
from tests.support import CALLBACK_SECRET, bridge_env, free_port, run_cli, settings_from

run = run_cli


def test_submit_wait_status_and_token_check(redis_server, prefix, sandbox, workers, tmp_path):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    workers(env, concurrency=2)
    body = tmp_path / "person.json"
    body.write_text(json.dumps({"firstName": "Camille", "lastName": "Durand"}))
    done = run(env, "submit", "POST", "/Persons", "--json", f"@{body}", "--idempotency-key", "p-1", "--wait")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["status"] == "succeeded" and status["response"]["status_code"] == 201
    assert status["response"]["body"]["lastName"] == "Durand"

    again = run(env, "status", status["id"])
    assert again.returncode == 0 and json.loads(again.stdout)["id"] == status["id"]

    failed = run(env, "submit", "GET", "/Vehicles/ZZ-000-ZZ", "--wait")
    assert failed.returncode == 1 and json.loads(failed.stdout)["status"] == "failed"

    token = run(env, "token", "check")
    assert token.returncode == 0 and "valid for" in token.stdout
    assert sb.stats()["token_requests"] == 1  # reused the workers' token, did not fetch another


@pytest.mark.processes
def test_errors_are_one_line_with_the_usual_exit_codes(redis_server, prefix, sandbox):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    cases = [
        (("submit", "TRACE", "/Vehicles"), 2, "invalid operation: method: "),
        (("submit", "GET", "//evil.example/x"), 2, "invalid operation: path: "),
        (("submit", "GET", "/Vehicles", "--query", "novalue"), 2, "--query: expected name=value"),
        (("submit", "GET", "/Vehicles", "--json", "{not json"), 2, "--json: not valid JSON"),
        (("status", "no-such-job"), 1, "no job no-such-job"),
    ]
    for args, code, message in cases:
        result = run(env, *args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    down = run({**env, "BRIDGE_REDIS_URL": f"redis://:hunter22@127.0.0.1:{free_port()}/0"}, "status", "x")
    assert down.returncode == 1 and down.stderr.startswith("optimum-bridge: cannot use Redis: ")
    assert "hunter22" not in down.stderr and down.stderr.count("\n") == 1
    bad = run({**env, "OPTIMUM_RATE_LIMIT": "lots"}, "worker")
    assert bad.returncode == 2 and bad.stderr.strip().endswith(
        "OPTIMUM_RATE_LIMIT: expected N/s, N/m or N/h with N >= 1, got 'lots'"
    )
    assert sb.stats()["calls"] == 0


@pytest.mark.parametrize(
    ("extra", "pool", "rest"),
    [
        ([], None, []),
        (["-c", "2"], None, ["-c", "2"]),
        (["--pool", "prefork", "-c", "2"], "prefork", ["-c", "2"]),
        (["--pool=gevent"], "gevent", []),
        (["-P", "gevent", "-l", "INFO"], "gevent", ["-l", "INFO"]),
        (["-Pgevent"], "gevent", []),
        (["--pool", "threads", "-c", "2", "--pool", "gevent"], "gevent", ["-c", "2"]),  # the last wins, as in click
    ],
)
def test_worker_passes_celery_exactly_one_pool_option(extra, pool, rest):
    assert _split_pool(extra) == (pool, rest)


# --- batches and priority (spec §10, §11) --------------------------------------------------

VEHICLES = {"method": "GET", "path": "/Vehicles"}


def jsonl(path, *operations):
    path.write_text("".join(f"{json.dumps(op) if isinstance(op, dict) else op}\n" for op in operations))
    return str(path)


def test_batch_submit_wait_shows_progress_and_ends_done(redis_server, prefix, sandbox, workers, receiver, tmp_path):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="20/s")
    workers(env, concurrency=2)
    ops = jsonl(
        tmp_path / "ok.jsonl", VEHICLES, "", {**VEHICLES, "metadata": {"n": 2}}, {**VEHICLES, "priority": "bulk"}
    )
    args = (
        "batch",
        "submit",
        ops,
        "--wait",
        "--timeout",
        "60",
        "--callback",
        receiver.url,
        "--metadata",
        '{"run": "c"}',
    )
    done = run(env, *args)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["status"] == "done" and status["total"] == 3 and status["metadata"] == {"run": "c"}, status
    assert status["counts"] == {"queued": 0, "running": 0, "retrying": 0, "succeeded": 3, "failed": 0, "cancelled": 0}
    assert status["finished_at"] is not None
    assert f"batch {status['id']}: 3/3 done (succeeded 3, failed 0" in done.stderr.splitlines()[-1], done.stderr

    again = run(env, "batch", "status", status["id"])
    assert again.returncode == 0 and json.loads(again.stdout) == status, again.stderr
    wait_for = receiver.wait(lambda: receiver.received, timeout=30, what="the batch.completed callback")
    payload = Webhook(CALLBACK_SECRET).verify(wait_for[0].body, wait_for[0].headers)
    assert payload["type"] == "batch.completed" and payload["data"]["id"] == status["id"]
    assert payload["data"]["counts"] == status["counts"]

    mixed = jsonl(tmp_path / "mixed.jsonl", VEHICLES, {"method": "GET", "path": "/Vehicles/ZZ-000-ZZ"})
    failed = run(env, "batch", "submit", mixed, "--wait", "--timeout", "60")
    assert failed.returncode == 1, failed.stderr
    final = json.loads(failed.stdout)
    assert final["status"] == "done" and final["counts"]["succeeded"] == 1 and final["counts"]["failed"] == 1


@pytest.mark.processes
def test_batch_refusals_name_the_line_and_queue_nothing(redis_server, prefix, sandbox, tmp_path):
    env = bridge_env(redis_server.url, prefix, sandbox(quota=None))
    good = jsonl(tmp_path / "good.jsonl", VEHICLES)
    cases = [
        ((jsonl(tmp_path / "path.jsonl", VEHICLES, VEHICLES, {"method": "GET", "path": "Vehicles"}),), 2,
         "invalid operation: line 3: path: must start with '/'"),
        ((jsonl(tmp_path / "json.jsonl", VEHICLES, "{oops"),), 2, "invalid operation: line 2: not valid JSON"),
        ((jsonl(tmp_path / "cb.jsonl", "", {**VEHICLES, "callback": {"url": "ftp://x.example.com"}}),), 2,
         "invalid operation: line 2: callback.url: "),
        ((jsonl(tmp_path / "blank.jsonl", "", "  "),), 2, "no operations"),
        ((str(tmp_path / "missing.jsonl"),), 2, "cannot read"),
        ((good, "--metadata", "[1]"), 2, "--metadata: expected a JSON object"),
        ((good, "--metadata", "{no"), 2, "--metadata: not valid JSON"),
        ((good, "--callback", "ftp://x.example.com"), 2, "invalid operation: callback.url: "),
    ]  # fmt: skip
    for args, code, message in cases:
        result = run(env, "batch", "submit", *args)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    unknown = run(env, "batch", "status", "no-such-batch")
    assert unknown.returncode == 1 and unknown.stderr == "optimum-bridge: no batch no-such-batch\n", unknown.stderr
    assert list(redis_server.client().scan_iter(match=f"{prefix}*")) == []

    submitted = run(env, "batch", "submit", good)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", batch_id), submitted.stdout
    running = json.loads(run(env, "batch", "status", batch_id).stdout)
    assert running["status"] == "running" and running["total"] == 1 and running["counts"]["queued"] == 1


@pytest.mark.processes
def test_submit_priority_is_stored(redis_server, prefix, sandbox):
    env = bridge_env(redis_server.url, prefix, sandbox(quota=None))
    urgent = run(env, "submit", "GET", "/Vehicles", "--priority", "urgent")
    assert urgent.returncode == 0, urgent.stderr
    job_id = urgent.stdout.strip()
    assert BridgeClient(settings_from(env)).get(job_id).priority == "urgent"
    status = json.loads(run(env, "status", job_id).stdout)
    assert status["priority"] == "urgent" and status["status"] == "queued" and status["position"] == 0
    default = run(env, "submit", "GET", "/Vehicles")
    assert json.loads(run(env, "status", default.stdout.strip()).stdout)["priority"] == "normal"
    refused = run(env, "submit", "GET", "/Vehicles", "--priority", "asap")
    assert refused.returncode == 2 and "--priority: invalid choice: 'asap'" in refused.stderr
    # spec 13: an identical GET waits on the first one's call, unless told not to
    shared = json.loads(run(env, "status", default.stdout.strip()).stdout)
    assert shared["coalesced_with"] == job_id
    alone = run(env, "submit", "GET", "/Vehicles", "--no-coalesce")
    assert json.loads(run(env, "status", alone.stdout.strip()).stdout)["coalesced_with"] is None
    write = run(env, "submit", "POST", "/Persons", "--json", '{"firstName": "A", "lastName": "B"}', "--max-age", "5")
    assert write.returncode == 2 and "max_age_s applies to a GET only (this is a POST)" in write.stderr


class SteppedClock(Clock):
    def __init__(self) -> None:
        self.at = 100.0

    def monotonic(self) -> float:
        return self.at


def batch_status(done: int, *, total: int = 4, forecast: datetime | None = None) -> BatchStatus:
    return BatchStatus(
        id="b" * 32,
        status="done" if done == total else "running",
        total=total,
        counts=BatchCounts(succeeded=done, queued=total - done),
        submitted_at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
        estimated_done_at=forecast,
    )


def test_plain_progress_prints_a_line_every_two_seconds_and_the_last():
    clock, out = SteppedClock(), io.StringIO()
    progress = PlainProgress(out, clock=clock)
    forecast = datetime(2026, 12, 2, 9, 30, 5, tzinfo=UTC)
    for done, at in ((0, 100.0), (1, 100.5), (2, 102.0), (3, 102.5), (4, 103.0)):
        clock.at = at
        progress.update(batch_status(done, forecast=forecast))
    lines = out.getvalue().splitlines()
    assert lines == [
        f"batch {'b' * 32}: 0/4 done (succeeded 0, failed 0, running 0, retrying 0, queued 4), "
        "estimated done at 2026-12-02T09:30:05Z",
        f"batch {'b' * 32}: 2/4 done (succeeded 2, failed 0, running 0, retrying 0, queued 2), "
        "estimated done at 2026-12-02T09:30:05Z",
        describe(batch_status(4)),
    ]
    assert "estimated" not in lines[-1]
    assert open_progress(io.StringIO()).__class__ is PlainProgress  # not a terminal: plain lines


def test_a_terminal_gets_a_rich_bar():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    progress = open_progress(out)
    assert type(progress).__name__ == "RichProgress"
    progress.update(batch_status(1, forecast=datetime(2026, 12, 2, 9, 30, tzinfo=UTC)))
    progress.update(batch_status(4))
    progress.close()
    assert "4/4" in out.getvalue() and "ok 4" in out.getvalue()
