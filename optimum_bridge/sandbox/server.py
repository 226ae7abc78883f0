"""Serve the Optimum API simulator: in a background thread (tests) or in the foreground (CLI).

``SandboxServer`` runs the app of ``app`` under uvicorn in a daemon thread and
gives tests direct access to its state; ``main`` is ``optimum-bridge sandbox``.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, Self

import uvicorn
from pydantic import ValidationError

from optimum_bridge.clock import Clock
from optimum_bridge.process.asgi import Listening, listening_server
from optimum_bridge.sandbox.app import create_app
from optimum_bridge.sandbox.config import FaultSpec, SandboxConfig, validation_message
from optimum_bridge.sandbox.state import SandboxState

log = logging.getLogger(__name__)


def _base_url(host: str, port: int, scheme: str = "http") -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        return f"{scheme}://{host or '127.0.0.1'}:{port}"
    if address.is_unspecified:  # a wildcard bind is reached through loopback
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"{scheme}://[{address}]:{port}" if address.version == 6 else f"{scheme}://{address}:{port}"


def _uvicorn_config(
    app: Any, host: str, port: int, log_level: str, tls: tuple[str, str] | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=2,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )


class SandboxServer:
    """The simulator served by uvicorn in a daemon thread; a context manager."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        clock: Clock | None = None,
        start_timeout_s: float = 10.0,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``tls``: ``(certificate file, key file)`` to serve HTTPS (a test's private CA signed them)."""
        self.tls = tls
        self.app = create_app(config, clock=clock)
        self.state: SandboxState = self.app.state.sandbox
        self.host = host
        self.port = port
        self._log_level = log_level
        self._start_timeout_s = start_timeout_s
        self._server: Listening | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API base, e.g. ``http://127.0.0.1:54321``."""
        return _base_url(self.host, self.port, "https" if self.tls else "http")

    @property
    def token_url(self) -> str:
        """The identity server's token endpoint."""
        return self.url + "/connect/token"

    def open_connections(self) -> int:
        """Connections open now (a TLS test waits for none before stopping: TLS closes take a round trip)."""
        return len(self._server.server_state.connections) if self._server is not None else 0

    def start(self) -> Self:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("sandbox server already started")
        started = threading.Event()
        config = _uvicorn_config(self.app, self.host, self.port, self._log_level, self.tls)
        self._server = listening_server(config, lambda _server: started.set())
        self._thread = threading.Thread(target=self._server.run, name="sandbox", daemon=True)
        self._thread.start()
        waited = 0.0
        # Waits on the startup event; the timeout only lets us notice a dead thread.
        while not started.wait(0.05):
            waited += 0.05
            if not self._thread.is_alive() or waited >= self._start_timeout_s:
                self.stop()
                raise RuntimeError(f"sandbox server did not start on {self.host}:{self.port}")
        self.port = self._server.bound_port()
        log.info("sandbox serving at %s", self.url)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Direct, thread-safe access to the state (same effect as the admin endpoints).

    def stats(self) -> dict[str, Any]:
        """What ``GET /_sandbox/stats`` returns."""
        return self.state.stats()

    def configure(self, **knobs: Any) -> SandboxConfig:
        """Change knobs (pydantic-validated); returns the new config."""
        return self.state.configure(knobs)

    def add_faults(self, *, path: str, responses: list[dict[str, Any]], method: str | None = None) -> int:
        """Queue scripted answers; returns how many are pending in total."""
        spec = FaultSpec.model_validate({"method": method, "path": path, "responses": responses})
        return self.state.add_faults(spec)

    def revoke(self) -> int:
        """Revoke every token issued so far; returns how many were live."""
        return self.state.revoke_all()

    def reset(self) -> None:
        """Clear counters, log, faults and tokens; knobs unchanged."""
        self.state.reset()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optimum-bridge sandbox", description="Serve a simulated Optimum API.")
    add = parser.add_argument
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=8090)
    add("--quota", default="30/m", help='N/s, N/m or N/h; "none" for unlimited')
    add("--fleet-size", type=int, default=60)
    add("--seed", type=int, default=42)
    add("--latency-ms", type=float, default=0.0)
    add("--latency-jitter-ms", type=float, default=0.0)
    add("--error-rate", type=float, default=0.0)
    add("--error-status", type=int, default=503)
    add(
        "--token-lifetime",
        type=int,
        default=30_734_400,
        help="token lifetime in seconds",
    )
    add("--no-retry-after", action="store_true", help="send 429 without Retry-After")
    add(
        "--rate-limit-headers",
        choices=["none", "ietf", "x"],
        default="none",
        help="state the quota on every answer: IETF RateLimit-Policy/RateLimit, X-RateLimit-*, or not at all",
    )
    add("--wrap-lists", action="store_true", help='wrap lists as {"items": [...]}')
    add("--client", action="append", metavar="ID:SECRET[:QUOTA]", help="API client, with its own quota (repeatable)")
    add("--log-level", default="warning")
    return parser


def config_from_args(args: argparse.Namespace) -> SandboxConfig:
    """Build the knobs from parsed CLI arguments; raises ValidationError/ValueError."""
    knobs: dict[str, Any] = {
        "quota": None if args.quota.lower() in ("none", "off", "") else args.quota,
        "fleet_size": args.fleet_size,
        "seed": args.seed,
        "latency_ms": args.latency_ms,
        "latency_jitter_ms": args.latency_jitter_ms,
        "error_rate": args.error_rate,
        "error_status": args.error_status,
        "token_lifetime_s": args.token_lifetime,
        "retry_after": not args.no_retry_after,
        "rate_limit_headers": args.rate_limit_headers,
        "wrap_lists": args.wrap_lists,
    }
    if args.client:
        parts = [item.split(":") for item in args.client]
        if any(len(part) not in (2, 3) or not part[0] or not part[1] for part in parts):
            raise ValueError("--client must look like ID:SECRET or ID:SECRET:QUOTA")
        knobs["clients"] = {part[0]: part[1] for part in parts}
        knobs["client_quotas"] = {part[0]: part[2] for part in parts if len(part) == 3}
    return SandboxConfig.model_validate(knobs)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: serve in the foreground until SIGINT/SIGTERM; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValidationError as exc:
        print(f"sandbox: invalid option: {validation_message(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    app = create_app(config)

    def announce(server: Listening) -> None:
        url = _base_url(args.host, server.bound_port())
        clients = ", ".join(config.clients)
        print(
            f"Optimum sandbox: API {url}  token {url}/connect/token  client_id {clients}  "
            f"quota {config.quota or 'unlimited'} (headers: {config.rate_limit_headers})  "
            f"fleet {config.fleet_size} vehicles",
            flush=True,
        )

    server = listening_server(_uvicorn_config(app, args.host, args.port, args.log_level), announce)
    return _run_foreground(server)


def _run_foreground(server: Listening) -> int:
    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn installs its own handlers while serving, then restores these and
    # re-raises the signal it caught: ours just ask for exit, so main returns.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits this way when it cannot bind
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 1
