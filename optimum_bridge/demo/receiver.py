"""The demo's callback receiver: the harness's verifying receiver, at ``/hooks/optimum``.

It verifies every callback with the demo's secret (``harness.verify``: the
``standardwebhooks`` package when importable, else the bridge's own
``callbacks.sign`` with a constant-time comparison and the same 5-minute
timestamp tolerance), answers 204 to a verified callback and 400 otherwise.
The verifiers are importable from here too, as the demo's tests check them.
"""

from __future__ import annotations

from ..harness.receiver import CallbackReceiver
from ..harness.verify import SignatureError, make_verifier
from ..harness.verify import builtin_verifier as _builtin_verifier

__all__ = ["HOOK_PATH", "CallbackReceiver", "SignatureError", "_builtin_verifier", "make_verifier", "start_receiver"]

HOOK_PATH = "/hooks/optimum"


def start_receiver(secret: str) -> CallbackReceiver:
    """A receiver verifying with ``secret``, already serving."""
    return CallbackReceiver(secret, path=HOOK_PATH).start()
