"""A call as cheap as plain Celery (issue 17), with real worker processes, a private Redis, the sandbox.

A finished job's thread goes straight on to the next job whose slot is free
(``complete.lua``'s take: no message, no claim), and its callback's first delivery
is made by a small pool of the worker process (``callbacks.background``), not by
the thread. Bounds are loose; each test says what the behaviour before the
change would have measured.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import WorkerProcess
from optimum_bridge.keys import EXECUTE_TASK, Keys
from optimum_bridge.sandbox.fleet import generate_fleet
from tests.support import CALLBACK_SECRET, bridge_env, calls_to, settings_from, wait_finished, wait_until
from tests.support.slow_receiver import SlowReceiver

PLATES = generate_fleet(42, 60).plates()
RECEIVER_DELAY_S = 1.5


def vehicle(i: int, **extra: object) -> dict[str, object]:
    return {"method": "GET", "path": f"/Vehicles/{PLATES[i % len(PLATES)]}", **extra}


def execute_messages(worker: WorkerProcess) -> int:
    """Execute-task messages the worker received: Celery logs one ``Task <name>[<id>] received``
    line per message it takes from the broker (at the harness's INFO level), whatever the task does."""
    return len(re.findall(rf"Task {re.escape(EXECUTE_TASK)}\[[^\]]+\] received", worker.log()))


@pytest.fixture
def slow_receiver() -> Iterator[SlowReceiver]:
    """A verifying receiver (``standardwebhooks``) that answers every callback after ``RECEIVER_DELAY_S``."""
    with SlowReceiver(CALLBACK_SECRET, delay_s=RECEIVER_DELAY_S) as rec:
        yield rec


def test_a_slow_callback_receiver_does_not_hold_the_worker_thread(
    redis_server, prefix, sandbox, workers, slow_receiver
):
    """Five jobs on one thread, each with a callback the receiver answers only after 1.5 s.

    When the thread made each first delivery itself, every job but the last held it 1.5 s
    (under the first delivery's 2 s timeout, so no hand-over): first start to last finish
    took at least 4 x 1.5 = 6 s. Delivered by the worker's pool, the five calls run back
    to back, and the callbacks (answered concurrently) all still arrive, verified.
    """
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    workers(env, concurrency=1)
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([vehicle(i, callback={"url": slow_receiver.url}) for i in range(5)])
    wait_finished(client, ids, timeout=30, interval=0.1)
    jobs = [client.get(i) for i in ids]
    assert [job.status for job in jobs] == ["succeeded"] * 5
    starts: list[datetime] = [job.started_at for job in jobs if job.started_at is not None]
    ends: list[datetime] = [job.finished_at for job in jobs if job.finished_at is not None]
    assert len(starts) == len(ends) == 5
    span = (max(ends) - min(starts)).total_seconds()
    print(
        f"\none thread, 5 jobs, receiver answering after {RECEIVER_DELAY_S} s: first start -> last finish {span:.2f} s"
    )
    assert span < 4.0  # 6 s or more when the thread waited for each receiver

    slow_receiver.wait_for(ids, timeout=30)
    assert slow_receiver.counts()[2] == 0  # none failed verification
    with slow_receiver.cond:
        assert {i: slow_receiver.verified.get(i) for i in ids} == dict.fromkeys(ids, "succeeded")


def test_a_chain_of_jobs_runs_on_one_message(redis_server, prefix, sandbox, workers):
    """Twenty jobs at once on an unlimited quota, one worker thread.

    Observable: the worker's own log, where Celery writes one ``Task bridge.execute[...] received``
    line per execute message it takes from the broker. Without chaining, every job needs a message
    of its own (twenty lines: the dispatcher hands one to the free thread each time a job ends);
    with it, the thread that ran the first job takes the next one as it finishes each, on the
    same message. A few more messages are allowed (a dispatcher may hand a job to the thread in
    the instant between two takes), but far fewer than twenty.
    """
    n = 20
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="100000/s", BRIDGE_RATE_BURST="10000")
    worker = workers(env, concurrency=1)
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([vehicle(i) for i in range(n)])
    wait_finished(client, ids, timeout=60, interval=0.1)
    assert [client.get(i).status for i in ids] == ["succeeded"] * n
    sent = execute_messages(worker)
    print(f"\none thread, {n} jobs: {sent} execute messages")
    assert 1 <= sent <= n // 4, worker.tail(40)
    assert "nothing to do" not in worker.log()  # no message was left over for a job a take ran


def test_an_unexpected_error_in_a_chained_job_fails_that_job_not_the_first(redis_server, prefix, sandbox, workers):
    """The executor raising while it runs a job its thread took fails the taken job, visibly.

    No mock: the taken job's record is corrupted on purpose (its ``submitted_at`` loses its UTC
    offset) and the API answers it 503, so the executor's retry budget subtracts a naive datetime
    from an aware one (``TypeError``), the kind of bug ``ChainedJobError`` exists for. The Celery
    task only knows the first job's id: were the error not named after the taken job, the first
    (already succeeded) would be "failed" to no effect and the taken one left running until its
    lease ran out.
    """
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    worker = workers(env, concurrency=1)
    client = BridgeClient(settings_from(env))
    keys = Keys(prefix)
    first_op, broken_op = vehicle(0), vehicle(1)
    sb.add_faults(path=str(first_op["path"]), responses=[{"status": 200, "delay_ms": 1500}])  # time to set up
    sb.add_faults(path=str(broken_op["path"]), responses=[{"status": 503}])
    first = client.submit(first_op)
    wait_until(lambda: client.get(first).status == "running", timeout=20, what="the first job running")
    # Its one thread is busy for 1.5 s: the second waits in its lane for that thread's take.
    broken = client.submit(broken_op)
    submitted = redis_server.client().hget(keys.job(broken), "submitted_at").decode()
    naive = datetime.fromisoformat(submitted).replace(tzinfo=None).isoformat()
    redis_server.client().hset(keys.job(broken), "submitted_at", naive)
    assert client.get(first).status == "running", "the setup outran the first job's call"

    wait_finished(client, [first, broken], timeout=30, interval=0.1)
    assert client.get(first).status == "succeeded"
    failed = client.get(broken)
    assert failed.status == "failed" and failed.error is not None and failed.error.kind == "internal_error"
    assert execute_messages(worker) == 1  # the broken job ran on the first job's message: taken, not sent
    assert "ChainedJobError" in worker.log()
    assert redis_server.client().zcard(keys.leases) == 0


def test_a_warm_shutdown_stops_a_prefork_pool_from_taking_jobs(redis_server, prefix, sandbox, workers):
    """SIGTERM to a worker with ``--pool prefork`` while 200 jobs wait: it exits after the jobs in hand.

    The warm shutdown begins in the worker's main process, but a prefork pool runs the jobs in its
    children, each with a runtime of its own. Before the draining flag was shared memory
    (``process/flag.py``), the children never saw it: each went on taking jobs for ``chain_s``
    (30 s by default) and the worker exited only then, with ~100 more jobs done. Nothing is lost
    either way: the jobs left wait in their lanes, and a second worker runs each exactly once.
    """
    n, latency_ms = 200, 300
    sb = sandbox(quota=None, latency_ms=latency_ms)
    env = bridge_env(redis_server.url, prefix, sb, OPTIMUM_RATE_LIMIT="1000/s", BRIDGE_RATE_BURST="1000")
    client = BridgeClient(settings_from(env))
    ids = client.submit_many([vehicle(i, coalesce=False) for i in range(n)])  # a call each
    worker = workers(env, concurrency=2, pool="prefork")
    wait_until(lambda: client.get(ids[3]).status == "succeeded", timeout=60, what="the pool running jobs")

    asked = time.monotonic()
    code = worker.stop(timeout=90)
    took = time.monotonic() - asked
    left = sum(client.get(i).status == "queued" for i in ids)
    print(f"\nprefork -c 2, {latency_ms} ms calls: exited {took:.1f} s after SIGTERM, {left} of {n} jobs left queued")
    assert code == 0, worker.tail(40)
    assert took < 15, worker.tail(40)  # about 30 s when the children went on taking jobs
    assert left >= n // 2

    workers(env, concurrency=4)
    wait_finished(client, ids, timeout=120, interval=0.2)
    assert [client.get(i).status for i in ids] == ["succeeded"] * n
    paths = [str(vehicle(i)["path"]) for i in range(n)]
    assert sum(calls_to(sb, path) for path in set(paths)) == n  # none called twice, none lost
