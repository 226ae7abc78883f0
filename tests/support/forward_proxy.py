"""A small forward proxy on loopback for the tests: ``CONNECT`` tunnels and absolute-form HTTP requests,
each logged by its request line, as a corporate egress proxy sees them.

``hosts`` maps a name to the ``(address, port)`` the proxy connects to instead
(the proxy's own DNS), so a test can send a callback to ``hooks.example.com``
without a network. One thread per client connection; ``close`` stops it all.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

_BUFFER = 65536


class ForwardProxy:
    """``http://127.0.0.1:<port>``: logs every request line in ``log``."""

    def __init__(self, hosts: Mapping[str, tuple[str, int]] | None = None) -> None:
        self.log: list[str] = []
        self.hosts = dict(hosts or {})
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        """Stop listening and cut every tunnel still open."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _connect(self, host: str, port: int) -> socket.socket:
        upstream = socket.create_connection(self.hosts.get(host, (host, port)), timeout=30)
        with self._lock:
            self._open.add(upstream)
        return upstream

    def _handle(self, client: socket.socket) -> None:
        with self._lock:
            self._open.add(client)
        try:
            self._serve(client)
        finally:
            with self._lock:
                self._open.discard(client)

    def _serve(self, client: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(_BUFFER)
            if not chunk:
                return
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        line, *headers = head.split(b"\r\n")
        request_line = line.decode("latin-1")
        self.log.append(request_line)
        method, target, _ = request_line.split(" ", 2)
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream = self._connect(host, int(port))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            _tunnel(client, upstream, rest)
            return
        url = urlsplit(target)
        upstream = self._connect(url.hostname or "", url.port or 80)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        kept = [h + b"\r\n" for h in headers if not h.lower().startswith((b"proxy-", b"connection"))]
        upstream.sendall(f"{method} {path} HTTP/1.1\r\n".encode() + b"".join(kept) + b"Connection: close\r\n\r\n")
        _tunnel(client, upstream, rest, one_answer=True)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(_BUFFER):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _tunnel(client: socket.socket, upstream: socket.socket, first: bytes, *, one_answer: bool = False) -> None:
    """Copy both ways (``first``: client bytes read already) until the upstream is done (``one_answer``)
    or both sides closed; then close both."""
    if first:
        upstream.sendall(first)
    forward = threading.Thread(target=_pump, args=(client, upstream), daemon=True)
    forward.start()
    _pump(upstream, client)
    if not one_answer:
        forward.join(30)
    for sock in (client, upstream):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
