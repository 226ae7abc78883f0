"""The ``optimum-bridge`` command as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json

import pytest

from optimum_bridge.cli import _split_pool

from .conftest import bridge_env, free_port, run_cli

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
