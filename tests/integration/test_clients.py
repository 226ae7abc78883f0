"""``BridgeClient`` and ``AsyncBridgeClient`` (spec §17) through the same scenarios, against real Redis.

Each scenario runs once per client. The asyncio one is driven on its own
event loop by ``Awaited``, which awaits each call, so one test body reads
the same for both; the jobs are run in-process, as a worker would
(``tests.support.run``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from optimum_bridge import AsyncBridgeClient, BridgeClient, InvalidOperation, JobNotFound, NotWaiting
from optimum_bridge.jobs.batches import BatchNotFound
from optimum_bridge.process.runtime import Runtime
from optimum_bridge.upstream.documents import DocumentStore
from tests.support import bridge_env, run, settings_from

VEHICLES = {"method": "GET", "path": "/Vehicles"}


class Awaited:
    """An ``AsyncBridgeClient`` whose every method is awaited to the end on one event loop."""

    def __init__(self, client: AsyncBridgeClient, runner: asyncio.Runner) -> None:
        self.client = client
        self._runner = runner

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)
        return lambda *args, **kwargs: self._runner.run(method(*args, **kwargs))


@pytest.fixture(params=["sync", "async"])
def clients(request, redis_server, prefix, sandbox, runtime) -> Iterator[Callable[..., tuple[Runtime, Any]]]:
    """Factory: ``(runtime, client)`` where the client is a ``BridgeClient`` or an ``Awaited(AsyncBridgeClient)``."""
    runner = asyncio.Runner()
    opened: list[AsyncBridgeClient] = []

    def build(**env: str) -> tuple[Runtime, Any]:
        sb = sandbox(quota=None)
        rt = runtime(settings_from(bridge_env(redis_server.url, prefix, sb, **{"OPTIMUM_RATE_LIMIT": "100/s", **env})))
        if request.param == "sync":
            return rt, BridgeClient(rt.settings, client=rt.redis)
        opened.append(AsyncBridgeClient(rt.settings))
        return rt, Awaited(opened[-1], runner)

    yield build
    for client in opened:
        runner.run(client.aclose())
    runner.close()


def test_submit_get_and_wait(clients):
    rt, client = clients()
    job_id = client.submit({**VEHICLES, "metadata": {"ref": "a"}})
    waiting = client.get(job_id)
    assert waiting.status == "queued" and waiting.position == 0 and waiting.estimated_start_at is not None
    assert run(rt, job_id) == "succeeded"
    status = client.wait(job_id, timeout=5)
    assert status.status == "succeeded" and status.response is not None and status.response.status_code == 200
    assert status.operation.metadata == {"ref": "a"}


def test_submit_many_with_an_idempotency_key(clients):
    _, client = clients()
    first = client.submit_many([{**VEHICLES, "idempotency_key": "k1"}, {"method": "GET", "path": "/Persons"}])
    again = client.submit_many_detailed([{**VEHICLES, "idempotency_key": "k1"}])
    assert len(set(first)) == 2 and again == [(first[0], False)]


@pytest.mark.parametrize(
    ("operation", "message"),
    [
        ({"method": "GET", "path": "//evil.example.com/x"}, "path: "),
        ({**VEHICLES, "account": "nobody"}, "account: unknown account 'nobody'"),
        ({**VEHICLES, "callback": {"url": "http://10.0.0.7/hook"}}, "callback.url: '10.0.0.7' is a loopback"),
    ],
)
def test_the_same_refusals_name_the_field(clients, operation, message):
    _, client = clients(BRIDGE_CALLBACK_ALLOW_PRIVATE="false")
    with pytest.raises(InvalidOperation, match=f"^{message}"):
        client.submit(operation)
    with pytest.raises(InvalidOperation, match=rf"^operations\[1\]\.{message}"):
        client.submit_many([VEHICLES, operation])


def test_cancel_and_reprioritize(clients):
    rt, client = clients()
    kept, cancelled = client.submit_many([VEHICLES, {"method": "GET", "path": "/Persons"}])
    assert client.reprioritize(kept, "urgent").priority == "urgent"
    assert client.cancel(cancelled).status == "cancelled"
    with pytest.raises(NotWaiting, match="finished: not cancelled"):
        client.cancel(cancelled)
    assert run(rt, kept) == "succeeded"
    with pytest.raises(NotWaiting, match="finished: not moved"):
        client.reprioritize(kept, "bulk")
    with pytest.raises(JobNotFound):
        client.cancel("0" * 32)


def test_a_batch_is_submitted_followed_and_cancelled(clients):
    rt, client = clients()
    batch = client.submit_batch([VEHICLES, {"method": "GET", "path": "/Persons"}], metadata={"run": "nightly"})
    assert client.batch_jobs(batch.id) == batch.job_ids
    status = client.get_batch(batch.id)
    assert status.total == 2 and status.counts.queued == 2 and status.metadata == {"run": "nightly"}
    assert run(rt, batch.job_ids[0]) == "succeeded"
    done = client.cancel_batch(batch.id)
    assert done.finished and (done.counts.succeeded, done.counts.cancelled) == (1, 1)
    assert client.wait_batch(batch.id, timeout=5).finished_at is not None
    with pytest.raises(BatchNotFound):
        client.get_batch("0" * 32)


def test_wait_reads_no_faster_than_the_job_can_change(clients):
    _, client = clients(OPTIMUM_RATE_LIMIT="1/s", BRIDGE_RATE_BURST="1")
    *_, last = client.submit_many([{"method": "GET", "path": f"/Vehicles/P{i}"} for i in range(5)])
    assert client.get(last).position == 4  # its slot is about 4 s away: nothing can change before
    reads = 0
    target = client.client if isinstance(client, Awaited) else client
    get = target.get

    def counted(job_id: str) -> Any:
        nonlocal reads
        reads += 1
        return get(job_id)

    target.get = counted
    with pytest.raises(TimeoutError, match=rf"^job {last} still queued after 1.5s$"):
        client.wait(last, timeout=1.5, poll_s=0.01)
    assert reads <= 3  # polling every poll_s would read about 150 times


@pytest.mark.processes  # a fresh interpreter: what importing the clients loads
def test_importing_the_clients_loads_no_worker_part():
    code = (
        "import json, sys\n"
        "from optimum_bridge import AsyncBridgeClient, BridgeClient\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout))
    heavy = ("celery", "kombu", "httpx", "rich", "fastapi", "uvicorn", "starlette", "openapi_core")
    ours = ("optimum_bridge.jobs.executor", "optimum_bridge.callbacks.sender", "optimum_bridge.process.runtime")
    assert not {m for m in loaded if m.split(".")[0] in heavy or m.startswith(ours)}


def test_a_document_openapi_core_cannot_read_checks_nothing_and_is_not_read_again(clients, caplog):
    rt, client = clients()
    DocumentStore(rt.redis, rt.keys).put("default", {"openapi": "3.0.1", "paths": "not an object"})
    with caplog.at_level(logging.WARNING, logger="optimum_bridge"):
        first = client.submit({"method": "GET", "path": "/NotInAnyDocument"})  # the build failed in its step
        client.submit({"method": "GET", "path": "/NotInAnyDocument/either"})
    assert client.get(first).status == "queued"
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert warnings == ["the OpenAPI document of account default cannot be read; operations go unchecked"]
