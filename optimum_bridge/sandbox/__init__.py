"""The Optimum API simulator (``optimum-bridge sandbox``): identity server, API endpoints, quota, faults.

``app`` is the ASGI app and its request pipeline, ``endpoints`` the simulated
API, ``state`` its memory (tokens, per-client quota, faults, stats),
``config`` the knobs, ``fleet*`` the generated French fleet, and ``server``
runs it in a thread (tests) or in the foreground (CLI). Needs the
``sandbox`` extra.
"""

from __future__ import annotations

from optimum_bridge.sandbox.app import create_app
from optimum_bridge.sandbox.config import SandboxConfig
from optimum_bridge.sandbox.server import SandboxServer, main
from optimum_bridge.sandbox.state import SandboxState

__all__ = ["SandboxConfig", "SandboxServer", "SandboxState", "create_app", "main"]
