"""The Optimum API simulator (``optimum-bridge sandbox``): identity server, API endpoints, quota, faults.

``app`` is the ASGI app and its request pipeline, ``endpoints`` the simulated
API, ``state`` its memory (tokens, per-client quota, faults, stats),
``config`` the knobs, ``fleet*`` the generated French fleet, and ``server``
runs it in a thread (tests) or in the foreground (CLI). Needs the
``sandbox`` extra.
"""

from __future__ import annotations

from .app import create_app
from .config import SandboxConfig
from .server import SandboxServer, main
from .state import SandboxState

__all__ = ["SandboxConfig", "SandboxServer", "SandboxState", "create_app", "main"]
