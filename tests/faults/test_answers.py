"""An answer larger than ``BRIDGE_MAX_RESPONSE_BYTES``, sent by the sandbox to a real worker (spec §17).

The sandbox streams the padded answers chunked, without a content-length, so
the worker learns their size only by reading them.
"""

from __future__ import annotations

from pathlib import Path

from optimum_bridge import BridgeClient
from optimum_bridge.devstack import CallbackReceiver
from tests.support import CALLBACK_SECRET, bridge_env, settings_from, wait_until

MIB = 1024 * 1024


def peak_rss(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_a_17_mib_answer_fails_too_large_with_its_callback_and_memory_stays_bounded(
    redis_server, prefix, sandbox, workers
):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)  # the default limit: 16 MiB
    worker = workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    with CallbackReceiver(CALLBACK_SECRET) as receiver:
        assert client.wait(client.submit({"method": "GET", "path": "/Vehicles"}), timeout=30).status == "succeeded"
        before = peak_rss(worker.process.pid)
        sb.add_faults(path="/Vehicles/AB-123-CD", responses=[{"status": 200, "padded_to_bytes": 17 * MIB}])
        sb.add_faults(path="/Persons", responses=[{"status": 200, "padded_to_bytes": 512 * MIB}])
        hook = {"url": receiver.url}
        big = client.submit({"method": "GET", "path": "/Vehicles/AB-123-CD", "callback": hook})
        huge = client.submit({"method": "GET", "path": "/Persons", "callback": hook})
        for job_id in (big, huge):
            status = client.wait(job_id, timeout=60)
            assert status.status == "failed" and status.attempts == 1, status
            assert status.error is not None and status.error.kind == "response_too_large"
            assert status.response is None  # never a truncated body
        events = wait_until(lambda: receiver.received if len(receiver.received) == 2 else None, what="2 callbacks")
        growth = peak_rss(worker.process.pid) - before
    kinds = {e.payload["data"]["id"]: (e.payload["type"], e.payload["data"]["error"]["kind"]) for e in events}
    assert kinds == {job: ("operation.failed", "response_too_large") for job in (big, huge)}
    print(f"\nworker peak RSS growth reading a 17 MiB and a 512 MiB answer (limit 16 MiB): {growth / MIB:.1f} MiB")
    assert growth < 128 * MIB  # reading the 512 MiB answer whole would take more than 512 MiB


def test_a_15_mib_answer_succeeds_whole(redis_server, prefix, sandbox, workers):
    sb = sandbox(quota=None)
    env = bridge_env(redis_server.url, prefix, sb)
    workers(env, concurrency=2)
    client = BridgeClient(settings_from(env))
    sb.add_faults(path="/Vehicles/AB-123-CD", responses=[{"status": 200, "padded_to_bytes": 15 * MIB}])
    status = client.wait(client.submit({"method": "GET", "path": "/Vehicles/AB-123-CD"}), timeout=60)
    assert status.status == "succeeded", status.error
    assert status.response is not None and isinstance(status.response.body, dict)
    assert len(status.response.body["padding"]) == 15 * MIB - len('{"padding": ""}')
