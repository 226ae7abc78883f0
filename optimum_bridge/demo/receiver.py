"""The demo's callback receiver: a local HTTP server that verifies every signed callback.

Verification uses the ``standardwebhooks`` package when it is importable (an
independent implementation of the spec), else the bridge's own
``callbacks.sign`` with a constant-time comparison and the same 5-minute
timestamp tolerance. Answers 204 to a verified callback, 400 otherwise.
"""

from __future__ import annotations

import base64
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..callbacks import sign

TOLERANCE_S = 300
MAX_BODY = 16 * 1024 * 1024

Verify = Callable[[bytes, Mapping[str, str]], Any]


class SignatureError(ValueError):
    """A callback whose headers or signature do not verify."""


def _builtin_verifier(secret: str) -> Verify:
    key = base64.b64decode(secret.removeprefix("whsec_"))

    def verify(body: bytes, headers: Mapping[str, str]) -> Any:
        msg_id, stamp, signatures = (
            headers.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        )
        if not (msg_id and stamp.isdigit() and signatures):
            raise SignatureError("missing or malformed webhook headers")
        if abs(time.time() - int(stamp)) > TOLERANCE_S:
            raise SignatureError("timestamp outside the tolerance")
        expected = sign(key, msg_id, int(stamp), body).encode()
        if not any(hmac.compare_digest(expected, given.encode()) for given in signatures.split()):
            raise SignatureError("no matching signature")
        return json.loads(body)

    return verify


def make_verifier(secret: str) -> tuple[Verify, str]:
    """A verify function for ``secret`` and the name of what it uses."""
    try:
        from standardwebhooks.webhooks import Webhook
    except ImportError:
        return _builtin_verifier(secret), "optimum_bridge.callbacks.sign + hmac.compare_digest"
    webhook = Webhook(secret)

    def verify(body: bytes, headers: Mapping[str, str]) -> Any:
        try:
            return webhook.verify(body, dict(headers))
        except Exception as exc:  # the library raises its own error types
            raise SignatureError(str(exc)) from exc

    return verify, "standardwebhooks"


@dataclass
class Tally:
    """What the receiver saw: webhook ids received, job ids verified, rejections."""

    received: set[str] = field(default_factory=set)
    verified: dict[str, str] = field(default_factory=dict)
    rejected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class CallbackReceiver:
    """``http://127.0.0.1:<port>/hooks/optimum``, served from a daemon thread."""

    def __init__(self, secret: str) -> None:
        self.verify, self.method = make_verifier(secret)
        self.tally = Tally()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-receiver", daemon=True)

    @property
    def url(self) -> str:
        """Where callbacks go."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/optimum"

    def start(self) -> CallbackReceiver:
        """Start serving in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def counts(self) -> tuple[int, int, int]:
        """``(received, verified, rejected)`` so far."""
        with self.tally.lock:
            return len(self.tally.received), len(self.tally.verified), self.tally.rejected

    def record(self, body: bytes, headers: Mapping[str, str]) -> int:
        """Verify and count one callback; returns the HTTP status to answer."""
        with self.tally.lock:
            self.tally.received.add(headers.get("webhook-id", f"missing-{len(self.tally.received)}"))
        try:
            payload = self.verify(body, headers)
            job_id = str(payload["data"]["id"])
            state = str(payload["data"]["status"])
        except (SignatureError, ValueError, KeyError, TypeError):
            with self.tally.lock:
                self.tally.rejected += 1
            return 400
        with self.tally.lock:
            self.tally.verified[job_id] = state
        return 204


def _handler_for(receiver: CallbackReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                status = 413
            else:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.record(self.rfile.read(length), headers)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request log lines."""

    return Handler
