"""The package is typed (spec §17, PEP 561): a consumer's ``mypy --strict`` reads its hints, of both clients."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONSUMER = """
from __future__ import annotations

import asyncio

from optimum_bridge import AsyncBridgeClient, BridgeClient, JobStatus, Operation


def sync_side(client: BridgeClient) -> JobStatus:
    job_id: str = client.submit(Operation(method="GET", path="/Vehicles"))
    ids: list[str] = client.submit_many([{"method": "GET", "path": "/Persons"}])
    batch = client.submit_batch([{"method": "GET", "path": "/Vehicles"}], metadata={"run": "nightly"})
    print(ids, batch.job_ids, client.get_batch(batch.id).counts.succeeded)
    return client.wait(job_id, timeout=30)


async def async_side() -> int:
    async with AsyncBridgeClient.from_env() as client:
        job_id = await client.submit({"method": "GET", "path": "/Vehicles"})
        statuses = await asyncio.gather(*(client.wait(i, timeout=30) for i in [job_id]))
        moved = await client.reprioritize(job_id, "urgent")
        batch = await client.cancel_batch((await client.submit_batch([{"method": "GET", "path": "/Vehicles"}])).id)
        return len(statuses) + batch.total + (moved.position or 0)
"""

WRONG = """
from optimum_bridge import AsyncBridgeClient, BridgeClient


async def mistakes(sync: BridgeClient, client: AsyncBridgeClient) -> None:
    count: int = sync.submit({"method": "GET", "path": "/Vehicles"})
    status = client.get("job")
    print(count, status.status)
"""


def mypy(directory: Path, name: str, text: str) -> subprocess.CompletedProcess[str]:
    (directory / name).write_text(text)
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file", "/dev/null", name]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.processes  # mypy in a process of its own, from a directory outside the project
def test_a_consumer_passes_mypy_strict_and_its_mistakes_are_caught(tmp_path):
    clean = mypy(tmp_path, "consumer.py", CONSUMER)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    wrong = mypy(tmp_path, "wrong.py", WRONG)
    assert 'Incompatible types in assignment (expression has type "str", variable has type "int")' in wrong.stdout
    assert '"Coroutine[Any, Any, JobStatus]" has no attribute "status"' in wrong.stdout
    assert "py.typed" not in wrong.stdout  # the package itself is read as typed
