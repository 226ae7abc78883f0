"""``docker compose --profile ha up``, run for real in podman: the bridge through three sentinels survives its primary.

What an operator of spec §16 does with the compose file, unchanged: the ``ha`` profile
beside the sandbox one, ``BRIDGE_REDIS_SCHEME=redis+sentinel`` and the sentinels'
address in ``.env`` (the README's lines), and ``BRIDGE_REDIS_MIN_REPLICAS=1`` so that
every acknowledgement waits for ``redis-replica``. Then:

1. an operation through the ingress comes back as a signed callback (the first
   primary, ``redis``, and its replica);
2. ``redis`` is killed; the sentinels promote ``redis-replica``;
3. ``redis`` comes back and the sentinels make it a replica of the new primary, so
   ``MIN_REPLICAS=1`` can be met again;
4. a second operation comes back as a signed callback through the new primary, and
   the first one is still there, succeeded: what was acknowledged before the kill
   had reached the replica that is now the primary.

The services of the bridge (ingress, workers, Flower) are the same containers from
start to end: none is restarted by hand. ``tests/faults/test_failover.py`` measures the
promise of §16 itself (SIGKILL under load, nothing lost or run twice) on loopback; this
test proves the compose file's wiring of it: names, passwords, hostnames that the
sentinels announce and the bridge's containers resolve.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from optimum_bridge.devstack.receiver import CallbackReceiver
from tests.support import wait_until
from tests.system.test_stack import (
    Podman,
    Stack,
    compose_stack,
    image,  # noqa: F401  # the module-scoped fixture: the project image, built once per machine
    podman,  # noqa: F401  # the module-scoped fixture
    write_env,
)

pytestmark = [pytest.mark.stack, pytest.mark.processes, pytest.mark.timeout(1200)]

SENTINELS = ("sentinel-1", "sentinel-2", "sentinel-3")
#: The README's lines for the ha profile, and acknowledgements that wait for one replica.
HA_SETTINGS = {
    "COMPOSE_PROFILES": "sandbox,ha",
    "BRIDGE_REDIS_SCHEME": "redis+sentinel",
    "BRIDGE_REDIS_ADDRESS": "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/bridge/0",
    "BRIDGE_REDIS_MIN_REPLICAS": "1",
}


def with_ha(env_file: Path) -> None:
    """The generated ``.env`` with the ha settings in place of the lines it has for them."""
    kept = [line for line in env_file.read_text().splitlines() if line.partition("=")[0] not in HA_SETTINGS]
    env_file.write_text("\n".join([*kept, *(f"{name}={value}" for name, value in HA_SETTINGS.items())]) + "\n")


@pytest.fixture(scope="module")
def ha_stack(podman: Podman, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811
    env_file = write_env(tmp_path_factory.mktemp("stack-ha"))
    with_ha(env_file)
    services = ("api", "worker", "redis", "redis-replica", *SENTINELS)
    with compose_stack(podman, env_file, f"obrha{os.getpid()}", logs=services, timeout=180) as running:
        yield running


def primary(stack: Stack) -> str:
    """The primary's host name as the first sentinel that answers names it ('' while none answers)."""
    for sentinel in SENTINELS:
        asked = stack.podman.podman(
            "exec",
            stack.one(sentinel),
            "redis-cli",
            "-p",
            "26379",
            "sentinel",
            "get-master-addr-by-name",
            "bridge",
            check=False,
        )
        if asked.returncode == 0 and asked.stdout.split():
            return asked.stdout.split()[0]
    return ""


def not_ready_to_fail_over(stack: Stack) -> list[str]:
    """What an operator checks before trusting a failover, on every sentinel: ``SENTINEL CKQUORUM``
    counting all three (each knows the two others, from their hello messages), ``SENTINEL REPLICAS``
    listing ``redis-replica`` as a healthy replica (learned from the primary's INFO, every 10 s), and
    no TILT (``INFO sentinel``; a sentinel in TILT does nothing for 30 s). What is missing, per sentinel."""
    missing = []
    for sentinel in SENTINELS:
        asks = ("sentinel ckquorum bridge", "sentinel replicas bridge", "info sentinel")
        script = "; echo --; ".join(f"redis-cli -p 26379 {ask}" for ask in asks)
        out = stack.podman.podman("exec", stack.one(sentinel), "sh", "-c", script, check=False).stdout
        quorum, replicas, info = [*out.split("\n--\n"), "", ""][:3]
        if not quorum.startswith("OK 3 usable"):
            missing.append(f"{sentinel}: {quorum.strip() or 'no answer'}")
        entries = [
            dict(zip(entry[::2], entry[1::2], strict=True)) for entry in _split_at(replicas.splitlines(), "name")
        ]
        healthy = [e for e in entries if e.get("ip") == "redis-replica" and e.get("flags") == "slave"]
        if not healthy or healthy[0].get("master-link-status") != "ok":
            missing.append(f"{sentinel}: no healthy redis-replica in {entries}")
        if "sentinel_tilt:0" not in info:
            missing.append(f"{sentinel}: in TILT or no INFO ({info.strip()[:200]})")
    return missing


def _split_at(fields: list[str], key: str) -> list[list[str]]:
    """redis-cli's flat listing of several entries (``name x ip y ... name z ...``), one list per entry."""
    entries: list[list[str]] = []
    for index, value in enumerate(fields):
        if value == key and index % 2 == 0:
            entries.append([])
        if entries:
            entries[-1].append(value)
    return [entry for entry in entries if len(entry) % 2 == 0]


def replicas_of(stack: Stack, service: str) -> int:
    """How many replicas the Redis of ``service`` has online, past their first sync (``INFO replication``)."""
    info = stack.podman.podman("exec", stack.one(service), "sh", "-c", "redis-cli info replication", check=False).stdout
    fields = dict(line.strip().partition(":")[::2] for line in info.splitlines() if ":" in line)
    if fields.get("role") != "master":
        return 0
    return sum("state=online" in value for name, value in fields.items() if re.fullmatch(r"slave\d+", name))


def submit_and_receive(stack: Stack, tag: str) -> str:
    """One GET through the ingress; its signed callback received and verified; the job's id."""
    worker = stack.one("worker")
    resolve = "import socket; print(socket.gethostbyname('host.containers.internal'))"
    host_ip = stack.podman.podman("exec", worker, "python", "-c", resolve).stdout.strip()
    with CallbackReceiver(host=host_ip) as receiver:
        callback = f"http://host.containers.internal:{receiver.url.rsplit(':', 1)[1]}"
        operation = {"method": "GET", "path": "/Vehicles", "callback": {"url": callback}, "metadata": {"via": tag}}
        answer = httpx.post(f"{api(stack)}/v1/operations", json=operation, headers=authorization(stack), timeout=60)
        assert answer.status_code == 202, answer.text
        job_id = str(answer.json()["id"])
        receiver.wait(lambda: receiver.received, timeout=240, what=f"the callback of {tag}")
    delivered = receiver.received[0]
    payload = Webhook(stack.env["BRIDGE_CALLBACK_SECRET"]).verify(delivered.body, delivered.headers)
    assert payload["type"] == "operation.succeeded", str(payload)[:500]
    assert payload["data"]["id"] == job_id
    assert payload["data"]["operation"]["metadata"] == {"via": tag}
    return job_id


def api(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.port('BRIDGE_API_HOST_PORT')}"


def authorization(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.env['BRIDGE_API_KEYS'].split(',')[0]}"}


def test_the_bridge_goes_on_through_the_sentinels_when_its_primary_dies(ha_stack: Stack) -> None:
    stack = ha_stack
    for service in ("redis", "redis-replica", *SENTINELS, "api", "worker", "flower", "sandbox"):
        assert stack.containers(service), f"{service} is not running"
    bridge = {service: stack.one(service) for service in ("api", "worker", "flower")}
    wait_until(lambda: primary(stack) == "redis", timeout=60, interval=0.5, what="the sentinels naming redis")
    wait_until(lambda: replicas_of(stack, "redis") == 1, timeout=60, interval=0.5, what="redis-replica in sync")

    before = submit_and_receive(stack, "before the failover")

    # Killed only once the sentinels could fail over: on a loaded machine they may not yet know one
    # another or the replica, or be in TILT, a minute after `up` (stalled in name lookups).
    waited = time.monotonic()
    try:
        wait_until(lambda: not not_ready_to_fail_over(stack), timeout=120, interval=1, what="the sentinels ready")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {not_ready_to_fail_over(stack)}") from None
    print(f"stack-ha: sentinels ready to fail over after {time.monotonic() - waited:.1f}s more")
    stack.podman.podman("kill", stack.one("redis"))
    killed = time.monotonic()
    # 120 s, measured on a loaded 2-core machine: the sentinels' lookups of the dead `redis` may stall
    # them ~30 s (+sdown 31 s after the kill, not 5), then TILT (30 s), then a first attempt may fail
    # (-failover-abort-no-good-slave: the replica stalled too) and be retried 2 x failover-timeout
    # later (20 s, docker-compose.yml): ~85 s. With the former 60000 a failed attempt alone took 120 s.
    wait_until(lambda: primary(stack) == "redis-replica", timeout=120, interval=0.5, what="the promotion")
    print(f"stack-ha: redis-replica promoted {time.monotonic() - killed:.1f}s after the kill")

    # `restart: unless-stopped` brings a killed container back under Docker; podman 4.3 without
    # systemd may not, so it is started as a supervisor would. The sentinels demote it.
    if not stack.containers("redis"):
        stack.podman.podman("start", f"{stack.project}_redis_1")
    wait_until(lambda: replicas_of(stack, "redis-replica") == 1, timeout=120, interval=0.5, what="redis as replica")

    after = submit_and_receive(stack, "after the failover")
    assert after != before
    answer = httpx.get(f"{api(stack)}/v1/operations/{before}", headers=authorization(stack), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded", "the job acknowledged before the kill is on the new primary"
    assert {service: stack.one(service) for service in bridge} == bridge, "no bridge container was replaced"
