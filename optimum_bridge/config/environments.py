"""Where each Optimum environment lives, and which URLs may carry a secret.

``production`` and ``preprod`` are the vendor's (``optimum-api.md``);
``sandbox`` is the bundled simulator, the only one reached over plain http.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from optimum_bridge.errors import ConfigError

if TYPE_CHECKING:
    from optimum_bridge.settings import Settings

Environment = Literal["preprod", "production", "sandbox"]

#: Where each environment lives (``optimum-api.md``); ``sandbox`` is the bundled simulator.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "production": (
        "https://public-api.optimum-automotive.com",
        "https://identityserver.optimum-automotive.com/connect/token",
    ),
    "preprod": (
        "https://apicore-preprod.optimum-automotive.com",
        "https://identityserver-preprod.optimum-automotive.com/connect/token",
    ),
    "sandbox": ("http://127.0.0.1:8090", "http://127.0.0.1:8090/connect/token"),
}
SANDBOX_CREDENTIALS = ("sandbox-client", "sandbox-secret")


def require_simulator(settings: Settings) -> None:
    """With ``OPTIMUM_ENVIRONMENT=sandbox``, a ``ConfigError`` unless the simulator's host name resolves.

    A compose stack started without its sandbox profile would otherwise retry
    every call for hours against a name that does not exist, its workers alive
    and its ``/readyz`` green. This only looks the name up; it sends nothing.
    """
    if settings.environment != "sandbox":
        return
    host = urlsplit(settings.token_url).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        variable = "OPTIMUM_TOKEN_URL" if settings.token_url_override else "OPTIMUM_SANDBOX_URL"
        raise ConfigError(
            f"{variable}: the simulator's host {host!r} does not resolve; with OPTIMUM_ENVIRONMENT=sandbox it must "
            "run (docker compose: --profile sandbox, or COMPOSE_PROFILES=sandbox in .env)"
        ) from None


def sandbox_endpoints(base_url: str) -> tuple[str, str]:
    """The API and token URLs of a simulator answering at ``base_url``."""
    base = base_url.rstrip("/")
    return base, f"{base}/connect/token"


def plain_http_refused(variable: str, environment: str) -> str:
    """The one line refusing a plain-http URL outside the sandbox."""
    return f"{variable}: must be https:// with OPTIMUM_ENVIRONMENT={environment} (http:// only for sandbox)"
