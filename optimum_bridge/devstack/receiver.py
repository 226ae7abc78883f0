"""The callback receiver: ``http://127.0.0.1:<port>/hook`` over loopback HTTP, served from a daemon thread.

It records every POST: ``attempts`` counts them, ``received`` keeps each
accepted one (headers, body, arrival on ``time.monotonic``, the clock every
process on the machine shares). Given the callback secret it also verifies
each callback (``verify``), answers 400 to one that does not verify, and keeps
per job id its final state (``verified``) and first arrival (``arrivals``).
``statuses`` scripts the answers (each POST takes the next; 204 when none
is left), to play an endpoint that fails. One ``Condition`` guards all of it
and is notified on every POST, so ``wait`` returns as soon as its condition holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar

from optimum_bridge.devstack.ports import LOOPBACK
from optimum_bridge.devstack.verify import SignatureError, Verify, make_verifier
from optimum_bridge.devstack.waiting import wait_on

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class Received:
    """One callback the receiver accepted (headers lower-cased)."""

    headers: dict[str, str]
    body: bytes
    arrived: float
    payload: Any = None  # the verified JSON body, when the receiver verifies


@dataclass(frozen=True)
class _Verdict:
    """What verification said about one callback (``ok`` also when not verifying)."""

    ok: bool
    payload: Any = None
    job_id: str | None = None
    state: str | None = None


class CallbackReceiver:
    """A local HTTP endpoint for callbacks; verifies them when given the ``secret``."""

    def __init__(
        self, secret: str | None = None, *, path: str = "/hook", keep_bodies: bool = True, host: str = LOOPBACK
    ) -> None:
        """``keep_bodies=False`` keeps counts and arrivals only (a benchmark's hundred thousand callbacks).

        ``host`` is the address to listen on: loopback, unless containers must reach it (tests/system/test_stack.py).
        """
        self.path = path
        self.keep_bodies = keep_bodies
        self.cond = threading.Condition()
        self.statuses: list[int] = []
        self.attempts = 0
        self.received: list[Received] = []
        self.webhook_ids: set[str] = set()
        self.verified: dict[str, str] = {}
        self.arrivals: dict[str, float] = {}
        self.duplicates = 0
        self.rejected = 0
        self._verify: Verify | None = None
        self.method = "not verified"
        if secret is not None:
            self._verify, self.method = make_verifier(secret)
        self.host = host
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True  # keep-alive connections must not hold up stop()
        self._thread = threading.Thread(target=self._server.serve_forever, name="callback-receiver", daemon=True)

    @property
    def url(self) -> str:
        """Where callbacks go."""
        return f"http://{self.host}:{self._server.server_address[1]}{self.path}"

    def start(self) -> Self:
        """Start serving in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def record(self, body: bytes, headers: Mapping[str, str], arrived: float) -> int:
        """Verify (if verifying) and record one callback; returns the HTTP status to answer."""
        verdict = self._check(body, headers)
        with self.cond:
            self.attempts += 1
            self.webhook_ids.add(headers.get("webhook-id", f"missing-{self.attempts}"))
            if not verdict.ok:
                self.rejected += 1
                status = 400
            else:
                status = self.statuses.pop(0) if self.statuses else 204
            if 200 <= status < 300:
                self._accept(Received(dict(headers), body, arrived, verdict.payload), verdict)
            self.cond.notify_all()
        return status

    def counts(self) -> tuple[int, int, int]:
        """``(received, verified, rejected)`` so far: distinct webhook ids, verified job ids, rejections."""
        with self.cond:
            return len(self.webhook_ids), len(self.verified), self.rejected

    def wait(self, predicate: Callable[[], T], *, timeout: float, what: str = "callbacks") -> T:
        """Block until ``predicate()`` (called with the lock held) is truthy; ``WaitTimeout`` after ``timeout``."""
        return wait_on(self.cond, predicate, timeout=timeout, what=what)

    def wait_for(self, ids: Iterable[str], *, timeout: float) -> dict[str, float]:
        """Block until every job id has called back (verified); their arrival times."""
        wanted = list(ids)
        self.wait(lambda: all(i in self.arrivals for i in wanted), timeout=timeout, what=f"{len(wanted)} callbacks")
        with self.cond:
            return {i: self.arrivals[i] for i in wanted}

    def clear(self) -> None:
        """Forget everything recorded (the scripted statuses too)."""
        with self.cond:
            self.statuses.clear()
            self.received.clear()
            self.webhook_ids.clear()
            self.verified.clear()
            self.arrivals.clear()
            self.attempts = self.duplicates = self.rejected = 0

    def _check(self, body: bytes, headers: Mapping[str, str]) -> _Verdict:
        if self._verify is None:
            return _Verdict(ok=True)
        try:
            payload = self._verify(body, headers)
            return _Verdict(True, payload, str(payload["data"]["id"]), str(payload["data"]["status"]))
        except (SignatureError, ValueError, KeyError, TypeError) as exc:
            log.info("callback %s rejected: %s", headers.get("webhook-id", "?"), exc)
            return _Verdict(ok=False)

    def _accept(self, callback: Received, verdict: _Verdict) -> None:
        """Keep an accepted callback (lock held)."""
        if self.keep_bodies:
            self.received.append(callback)
        if verdict.job_id is None or verdict.state is None:
            return
        self.verified[verdict.job_id] = verdict.state
        if verdict.job_id in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[verdict.job_id] = callback.arrived


def _handler_for(receiver: CallbackReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would

        def do_POST(self) -> None:
            arrived = time.monotonic()
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                status = 413
                self.close_connection = True  # the body stays unread
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.record(self.rfile.read(length), headers, arrived)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request log lines."""

    return Handler
