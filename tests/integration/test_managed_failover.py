"""A managed Redis failing over behind one address (spec §16): the client follows with a plain ``redis://`` URL.

ElastiCache, Memorystore and the like keep one name and move it to the
promoted replica; the old primary, demoted, answers writes with ``READONLY``
on the connections still open to it. Here a TCP forwarder plays the name: it
is switched to the replica as the replica is promoted and the primary demoted,
and the bridge's client, mid-use, must retry on a new connection instead of
failing the write.
"""

from __future__ import annotations

import socket
import threading

from optimum_bridge.process.redis import redis_client
from optimum_bridge.settings import load_settings
from tests.support import wait_until


class Forwarder:
    """Forwards each new connection to ``upstream`` (a port) as it is when the connection opens."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="forwarder").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_write_to_a_demoted_primary_is_retried_on_the_promoted_one(private_redis):
    primary = private_redis()
    replica = private_redis("--replicaof", "127.0.0.1", str(primary.port))
    wait_until(lambda: replica.client().info("replication")["master_link_status"] == "up", what="the replica")
    name = Forwarder(primary.port)
    client = redis_client(load_settings(BRIDGE_REDIS_URL=f"redis://127.0.0.1:{name.port}/0", environ={}))
    try:
        client.set("k", "before")
        # The provider's failover: the replica promoted, the name moved, the old primary demoted.
        replica.client().replicaof("NO", "ONE")
        name.upstream = replica.port
        primary.client().replicaof("127.0.0.1", str(replica.port))
        assert client.set("k", "after")  # READONLY on the open connection, then the promoted one
        assert replica.client().get("k") == b"after"
    finally:
        client.close()
        name.close()
