"""The HTTP ingress (``optimum-bridge api``): operations and batches over HTTP, health, readiness and metrics.

``app`` holds the operation routes and the API-key check, ``batches`` the
batch routes, ``http`` the HTTP plumbing (problem+json, the body caps, JSON
parsing, the shared dependencies), ``health`` the open endpoints
(``/healthz``, ``/readyz``, ``/metrics``). Needs the ``ingress`` extra.
"""

from __future__ import annotations

from optimum_bridge.ingress.app import create_app, serve

__all__ = ["create_app", "serve"]
