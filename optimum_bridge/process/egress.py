"""Where the bridge's HTTP goes: the API client and the callback client, with their proxies and trust store.

Both clients are built with ``trust_env=False``: no ``HTTPS_PROXY``,
``SSL_CERT_FILE`` or ``.netrc`` may send the client secret, a token or a
callback anywhere but where the settings say. The API client (the token,
the API calls, the OpenAPI document) goes through ``OPTIMUM_PROXY_URL`` and
trusts the public CAs plus ``OPTIMUM_CA_BUNDLE`` (a TLS-inspecting proxy's);
the callback client goes through ``BRIDGE_CALLBACK_PROXY_URL``.
"""

from __future__ import annotations

import ssl

import httpx
from pydantic import SecretStr

from optimum_bridge.settings import Settings


def trust_store(ca_bundle: str | None) -> ssl.SSLContext:
    """The public CAs httpx trusts (certifi's; never ``SSL_CERT_FILE``), plus the PEM certificates of ``ca_bundle``."""
    context = httpx.create_ssl_context(trust_env=False)
    if ca_bundle is not None:
        context.load_verify_locations(cafile=ca_bundle)
    return context


def _proxy(url: SecretStr | None) -> str | None:
    return url.get_secret_value() if url is not None else None


def api_http(settings: Settings) -> httpx.Client:
    """The client of the identity server and the API."""
    timeout = httpx.Timeout(settings.timeout_s, connect=min(10.0, settings.timeout_s))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    return httpx.Client(
        timeout=timeout,
        limits=limits,
        follow_redirects=False,
        trust_env=False,
        proxy=_proxy(settings.proxy_url),
        verify=trust_store(str(settings.ca_bundle) if settings.ca_bundle else None),
    )


def callback_http(settings: Settings) -> httpx.Client:
    """The client of the callbacks (public CAs only: a receiver is on the internet)."""
    return httpx.Client(
        timeout=settings.callback_timeout_s,
        follow_redirects=False,
        trust_env=False,
        proxy=_proxy(settings.callback_proxy_url),
    )
