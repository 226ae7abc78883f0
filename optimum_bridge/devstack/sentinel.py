"""A replicated Redis on loopback: one primary, replicas and sentinels, all private ``redis-server`` children.

``start_sentinel_group`` starts the data nodes (``start_redis`` with
``--replicaof``) and the sentinels (``redis-server FILE --sentinel``, as
Debian's ``redis-sentinel`` is), waits until the sentinels agree on the
primary and see its replicas, and gives the ``redis+sentinel://`` URL of the
group. ``kill_primary`` SIGKILLs the primary; ``wait_promoted`` waits for the
sentinels to name another; ``revive`` starts a killed node again as a replica
of the current primary. Sentinels answer quickly (``down_after_ms``) so a
failover takes a couple of seconds, as a test wants.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from optimum_bridge.devstack.ports import LOOPBACK, free_port
from optimum_bridge.devstack.processes import spawn, stop_process, tail
from optimum_bridge.devstack.redis_server import RedisServer, RedisUnavailable, find_binary, start_redis
from optimum_bridge.devstack.waiting import WaitTimeout, wait_until

SERVICE = "bridge"
START_TIMEOUT_S = 20.0


@dataclass
class SentinelProcess:
    """One sentinel: its port, process and directory (its config is rewritten by the sentinel itself)."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def client(self, password: str | None = None) -> redis.Redis:
        """A client of this sentinel (not of the data)."""
        return redis.Redis(host=LOOPBACK, port=self.port, password=password, socket_timeout=2, socket_connect_timeout=2)


@dataclass
class SentinelGroup:
    """Data nodes and sentinels for the service ``SERVICE``; ``stop`` stops them all."""

    nodes: list[RedisServer]
    sentinels: list[SentinelProcess]
    password: str | None = None
    sentinel_password: str | None = None
    killed: list[RedisServer] = field(default_factory=list)
    failover_timeout_s: float = 3.0
    #: A sentinel does not fail the same primary over again within twice ``failover-timeout``.
    calm_until: float = 0.0

    @property
    def url(self) -> str:
        """``redis+sentinel://[:PASSWORD@]127.0.0.1:P1,...,127.0.0.1:P3/SERVICE/0``."""
        auth = f":{self.password}@" if self.password else ""
        nodes = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{nodes}/{SERVICE}/0"

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                address = sentinel.client(self.sentinel_password).sentinel_get_master_addr_by_name(SERVICE)
            except (redis.RedisError, OSError):
                continue
            if isinstance(address, (tuple, list)):
                return int(address[1])
        return None

    def agreed_primary_port(self) -> int | None:
        """The primary's port if every sentinel names the same one (a client may ask any of them)."""
        ports = set()
        for sentinel in self.sentinels:
            try:
                address = sentinel.client(self.sentinel_password).sentinel_get_master_addr_by_name(SERVICE)
                state = sentinel.client(self.sentinel_password).sentinel_master(SERVICE)
            except (redis.RedisError, OSError):
                return None
            if not isinstance(address, (tuple, list)) or not isinstance(state, dict):
                return None
            if state.get("is_sdown") or state.get("is_odown") or not state.get("is_master"):
                return None  # what redis-py's Sentinel.discover_master refuses
            ports.add(int(address[1]))
        return ports.pop() if len(ports) == 1 else None

    def node(self, port: int) -> RedisServer:
        """The data node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def primary(self) -> RedisServer:
        """The current primary's node."""
        port = self.primary_port()
        if port is None:
            raise RedisUnavailable("no sentinel names a primary")
        return self.node(port)

    def data_client(self, node: RedisServer) -> redis.Redis:
        """A direct client of one data node (for checks: never a failover command on a shared Redis)."""
        return node.client(password=self.password, socket_timeout=5)

    def kill_primary(self) -> RedisServer:
        """SIGKILL the primary (no shutdown, no save): what a crashed host does.

        Not before the sentinels may fail over again: within twice ``failover-timeout`` of the
        last failover they would leave the group without a primary for that long.
        """
        time.sleep(max(0.0, self.calm_until - time.monotonic()))  # a sentinel timer, not an event
        primary = self.primary()
        primary.process.send_signal(signal.SIGKILL)
        primary.process.wait(10)
        self.killed.append(primary)
        return primary

    def wait_promoted(self, old_port: int, *, timeout: float = 30.0) -> RedisServer:
        """Wait until a sentinel names a primary other than ``old_port`` and that node says it is one."""

        def promoted() -> int:  # the new primary's port, 0 until every sentinel names it
            port = self.agreed_primary_port()
            if port is None or port == old_port:
                return 0
            try:
                role = self.data_client(self.node(port)).execute_command("ROLE")  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError):
                return 0
            return port if role[0] == b"master" else 0

        try:
            port = wait_until(promoted, timeout=timeout, interval=0.05, what="a replica to be promoted")
        except WaitTimeout as exc:
            logs = "\n".join(tail(s.workdir / "sentinel.log", 8) for s in self.sentinels[:1])
            raise WaitTimeout(f"{exc}; the first sentinel's log ends:\n{logs}") from None
        node = self.node(port)
        self.calm_until = time.monotonic() + 2 * self.failover_timeout_s + 0.5
        return node

    def take_out(self, node: RedisServer) -> None:
        """Stop a replica (SIGTERM): a failover then has one candidate less. ``revive`` brings it back."""
        stop_process(node.process, grace_s=10)
        self.killed.append(node)

    def revive(self, node: RedisServer) -> None:
        """Start a killed node again, as a replica of the current primary, and wait until it is in sync."""
        primary = self.primary()
        args = [*node.args, "--replicaof", LOOPBACK, str(primary.port)]
        node.process = spawn(args, log_path=node.log_path, cwd=node.workdir, append=True)
        self.killed.remove(node)

        def synced() -> bool:
            try:
                info = self.data_client(node).info("replication")
            except (redis.RedisError, OSError):
                return False
            return info.get("master_link_status") == "up"

        wait_until(synced, timeout=START_TIMEOUT_S, what=f"node {node.port} to sync from the primary")
        # A replica is a candidate for the next failover once every sentinel sees it as a healthy one
        # (sentinels read a replica's INFO every 10 s: until then it may still be the primary they lost).
        wait_until(lambda: self._seen_as_replica(node.port), timeout=30, interval=0.2, what="the sentinels")

    def _seen_as_replica(self, port: int) -> bool:
        for sentinel in self.sentinels:
            try:
                replicas = sentinel.client(self.sentinel_password).sentinel_slaves(SERVICE)
            except (redis.RedisError, OSError):
                return False
            entry = next((r for r in replicas if int(r.get("port", 0)) == port), None)
            if entry is None or entry.get("flags") != "slave" or entry.get("master-link-status") != "ok":
                return False
        return True

    def stop(self) -> None:
        """Stop every sentinel and node (SIGTERM, then SIGKILL) and remove their directories."""
        for sentinel in self.sentinels:
            stop_process(sentinel.process, grace_s=5)
            shutil.rmtree(sentinel.workdir, ignore_errors=True)
        for node in self.nodes:
            node.stop()


def failover_timeout_ms(down_after_ms: int) -> int:
    """The sentinels' ``failover-timeout``: short, so that a test may fail over twice in a few seconds."""
    return max(3000, down_after_ms * 3)


def _sentinel_config(
    port: int, workdir: Path, primary: int, *, quorum: int, down_after_ms: int, auth: dict[str, str]
) -> str:
    lines = [
        f"port {port}",
        f"bind {LOOPBACK}",
        f"dir {workdir}",
        f"sentinel monitor {SERVICE} {LOOPBACK} {primary} {quorum}",
        f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
        f"sentinel failover-timeout {SERVICE} {failover_timeout_ms(down_after_ms)}",
        f"sentinel parallel-syncs {SERVICE} 2",
    ]
    if "data" in auth:
        lines.append(f"sentinel auth-pass {SERVICE} {auth['data']}")
    if "sentinel" in auth:
        lines.append(f"requirepass {auth['sentinel']}")
    return "\n".join(lines) + "\n"


def start_sentinel_group(
    *,
    replicas: int = 2,
    sentinels: int = 3,
    down_after_ms: int = 1000,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> SentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels on loopback, all answering.

    Every replica may be promoted (the same ``replica-priority``), so the sentinels choose the
    most up-to-date one: a write ``WAIT`` saw on any replica survives the failover. (A replica
    preferred or excluded by priority would be chosen over a more up-to-date one.)
    """
    binary = find_binary()
    auth: tuple[str, ...] = ("--requirepass", password, "--masterauth", password) if password else ()
    auth += ("--repl-diskless-sync-delay", "0")  # a replica syncs at once (the default waits 5 s for others)
    nodes = [start_redis(*auth, binary=binary)]
    group = SentinelGroup(nodes, [], password, sentinel_password)
    group.failover_timeout_s = failover_timeout_ms(down_after_ms) / 1000
    try:
        for _ in range(replicas):
            nodes.append(start_redis(*auth, "--replicaof", LOOPBACK, str(nodes[0].port), binary=binary))
        secrets = {k: v for k, v in (("data", password), ("sentinel", sentinel_password)) if v}
        for _ in range(sentinels):
            group.sentinels.append(_start_sentinel(binary.path, nodes[0].port, sentinels, down_after_ms, secrets))
        _wait_ready(group, replicas)
    except (RedisUnavailable, WaitTimeout, OSError):
        group.stop()
        raise
    return group


def _start_sentinel(binary: str, primary: int, count: int, down_after_ms: int, auth: dict[str, str]) -> SentinelProcess:
    workdir = Path(tempfile.mkdtemp(prefix="obr-sentinel-"))
    port = free_port()
    config = workdir / "sentinel.conf"
    quorum = count // 2 + 1
    config.write_text(_sentinel_config(port, workdir, primary, quorum=quorum, down_after_ms=down_after_ms, auth=auth))
    config.chmod(0o600)  # it may hold passwords
    process = spawn([binary, str(config), "--sentinel"], log_path=workdir / "sentinel.log", cwd=workdir)
    return SentinelProcess(port, process, workdir)


def _wait_ready(group: SentinelGroup, replicas: int) -> None:
    """Every sentinel names the primary and knows its replicas and the other sentinels."""

    def ready() -> bool:
        for sentinel in group.sentinels:
            if sentinel.process.poll() is not None:
                raise RedisUnavailable(f"a sentinel exited: {tail(sentinel.workdir / 'sentinel.log', 3)}")
            try:
                state = sentinel.client(group.sentinel_password).sentinel_master(SERVICE)
            except (redis.RedisError, OSError):
                return False
            if not isinstance(state, dict) or int(state.get("num-slaves", 0)) < replicas:
                return False
            if int(state.get("num-other-sentinels", 0)) < len(group.sentinels) - 1:
                return False
        return True

    wait_until(ready, timeout=START_TIMEOUT_S, interval=0.1, what="the sentinels to see the primary and replicas")
