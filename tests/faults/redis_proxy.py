"""A TCP proxy in front of a redis-server that loses the broker at the worst moment.

Armed, it lets the first ``BRPOP`` reply that carries a message reach the
worker and, before anything else gets through, drops every connection and
refuses new ones for ``outage_s``: the message is popped in Redis and known
only to the worker, which must now record it as unacknowledged. That is what a
Redis restart does when it lands between kombu's pop and its unacked record.
With ``drop_reply`` the reply never reaches the worker: the message is gone
(a worker that tears a connection down with the reply unread does the same).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


def brpop_reply_length(buffer: bytes) -> int | None:
    """Length of a complete RESP2 ``*2`` reply (key, message) at the start of ``buffer``, or None."""
    position = buffer.index(b"\r\n") + 2  # past "*2\r\n"
    for _ in range(2):
        end = buffer.find(b"\r\n", position)
        if end < 0:
            return None
        position = end + 2 + int(buffer[position + 1 : end]) + 2  # "$<n>\r\n" + n bytes + "\r\n"
        if position > len(buffer):
            return None
    return position


class CuttingProxy:
    def __init__(self, upstream_port: int, outage_s: float = 1.0, *, drop_reply: bool = False) -> None:
        self.upstream_port = upstream_port
        self.outage_s = outage_s
        self.drop_reply = drop_reply  # the reply is lost with the connection: the message only Redis had is gone
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        self._down_until = 0.0
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._down():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()  # Redis itself is down: the client sees a closed connection
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            waiting = {"brpop": False}
            threading.Thread(target=self._requests, args=(client, upstream, waiting), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, waiting), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, waiting: dict[str, bool]) -> None:
        while data := self._recv(client):
            if self._down():
                break  # written after the cut: never reaches Redis
            if b"BRPOP" in data.upper():
                waiting["brpop"] = True
            upstream.sendall(data)
        self._close(client, upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket, waiting: dict[str, bool]) -> None:
        buffer = b""
        while data := self._recv(upstream):
            if self._down():
                break
            if not (waiting["brpop"] and self.armed.is_set() and (buffer + data).startswith(b"*2\r\n")):
                waiting["brpop"] = waiting["brpop"] and not data.startswith(b"*")
                client.sendall(data)
                continue
            buffer += data
            length = brpop_reply_length(buffer)
            if length is None:
                continue  # the rest of the message is still on its way
            self._down_until = time.monotonic() + self.outage_s  # first: nothing else passes from now on
            self.armed.clear()
            if not self.drop_reply:
                client.sendall(buffer[:length])
            self.cut_everything()
            self.cut.set()
            return
        self._close(client, upstream)

    def cut_everything(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            self._close(sock)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(65536)
        except OSError:
            return b""

    @staticmethod
    def _close(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
        self.listener.close()
        self.cut_everything()
