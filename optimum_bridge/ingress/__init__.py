"""The HTTP ingress (``optimum-bridge api``): operations over HTTP, health, readiness and metrics.

``app`` holds the routes and the API-key check, ``http`` the HTTP plumbing
(problem+json, the body cap, JSON parsing), ``health`` the open endpoints
(``/healthz``, ``/readyz``, ``/metrics``). Needs the ``ingress`` extra.
"""

from __future__ import annotations

from .app import create_app, serve

__all__ = ["create_app", "serve"]
