"""The callback receiver: ``http://127.0.0.1:<port>/hook``, in a thread of the bench process.

Every callback is verified with the ``standardwebhooks`` library (an
independent implementation of the spec) and its arrival timed with
``time.monotonic``, the clock every process on the machine shares.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from standardwebhooks.webhooks import Webhook

from .common import CALLBACK_SECRET, LOOPBACK, RedisProc, SandboxProc, start_redis, start_sandbox


@dataclass
class Receiver:
    """``http://127.0.0.1:<port>/hook``: verifies every callback (Standard Webhooks) and times its arrival."""

    secret: str = CALLBACK_SECRET
    arrivals: dict[str, float] = field(default_factory=dict)
    duplicates: int = 0
    rejected: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._webhook = Webhook(self.secret)
        self._server = ThreadingHTTPServer((LOOPBACK, 0), _receiver_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-receiver", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}/hook"

    def record(self, body: bytes, headers: dict[str, str], arrived: float) -> int:
        """Verify one callback; returns the status to answer."""
        try:
            payload = self._webhook.verify(body, headers)
            job_id = str(payload["data"]["id"])
        except Exception:
            with self.cond:
                self.rejected += 1
            return 400
        with self.cond:
            if job_id in self.arrivals:
                self.duplicates += 1
            else:
                self.arrivals[job_id] = arrived
            self.cond.notify_all()
        return 204

    def wait_for(self, ids: Iterable[str], *, timeout: float) -> dict[str, float]:
        """Block until every id has called back; their arrival times (monotonic)."""
        wanted = list(ids)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                missing = [i for i in wanted if i not in self.arrivals]
                if not missing:
                    return {i: self.arrivals[i] for i in wanted}
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(missing)} of {len(wanted)} callbacks missing after {timeout:.0f}s")
                self.cond.wait(min(left, 1.0))

    def clear(self) -> None:
        with self.cond:
            self.arrivals.clear()
            self.duplicates = self.rejected = 0

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _receiver_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

        def do_POST(self) -> None:
            arrived = time.monotonic()
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            status = receiver.record(body, {k.lower(): v for k, v in self.headers.items()}, arrived)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Silence per-request log lines."""

    return Handler


def start_services(stop: ExitStack, workdir: Path, *, quota: str | None) -> tuple[RedisProc, SandboxProc, Receiver]:
    """A private Redis, the sandbox and a receiver, each stopped when ``stop`` closes."""
    redis_proc = start_redis(workdir)
    stop.callback(redis_proc.stop)
    sandbox = start_sandbox(workdir, quota=quota)
    stop.callback(sandbox.stop)
    receiver = Receiver()
    stop.callback(receiver.stop)
    return redis_proc, sandbox, receiver
