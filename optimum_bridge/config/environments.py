"""Where each Optimum environment lives, and which URLs may carry a secret.

``production`` and ``preprod`` are the vendor's (``optimum-api.md``);
``sandbox`` is the bundled simulator, the only one reached over plain http.
"""

from __future__ import annotations

from typing import Literal

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


def sandbox_endpoints(base_url: str) -> tuple[str, str]:
    """The API and token URLs of a simulator answering at ``base_url``."""
    base = base_url.rstrip("/")
    return base, f"{base}/connect/token"


def plain_http_refused(variable: str, environment: str) -> str:
    """The one line refusing a plain-http URL outside the sandbox."""
    return f"{variable}: must be https:// with OPTIMUM_ENVIRONMENT={environment} (http:// only for sandbox)"
