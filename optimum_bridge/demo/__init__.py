"""The one-command demo (``optimum-bridge demo``): the whole bridge end to end against the sandbox.

``run`` is the command, ``stack`` starts everything it needs on one
``ExitStack``, ``batch`` is what it submits, ``report`` the progress and the
summary. Needs the ``demo`` extra.
"""

from __future__ import annotations

from optimum_bridge.demo.run import main

__all__ = ["main"]
