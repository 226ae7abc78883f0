"""The demo's callback receiver: the harness's verifying receiver, at ``/hooks/optimum``.

It verifies every callback with the demo's secret (``devstack.verify``: the
``standardwebhooks`` package when importable, else the bridge's own
``callbacks.signing.sign`` with a constant-time comparison and the same 5-minute
timestamp tolerance), answers 204 to a verified callback and 400 otherwise.
The verifiers are importable from here too, as the demo's tests check them.
``callback_counts`` tells the operations' callbacks from the batch's one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optimum_bridge.devstack.receiver import CallbackReceiver, Received
from optimum_bridge.devstack.verify import SignatureError, make_verifier
from optimum_bridge.devstack.verify import builtin_verifier as _builtin_verifier

__all__ = [
    "HOOK_PATH",
    "CallbackCounts",
    "CallbackReceiver",
    "SignatureError",
    "_builtin_verifier",
    "callback_counts",
    "make_verifier",
    "start_receiver",
]

HOOK_PATH = "/hooks/optimum"


def start_receiver(secret: str) -> CallbackReceiver:
    """A receiver verifying with ``secret``, already serving."""
    return CallbackReceiver(secret, path=HOOK_PATH).start()


@dataclass(frozen=True)
class CallbackCounts:
    """The operations' callbacks (distinct ones received, jobs verified), rejections, and the batch's deliveries."""

    received: int
    verified: int
    rejected: int
    batch: int  # verified ``batch.completed`` deliveries for the batch (repeats included): 1 is right


def _is_batch_completed(callback: Received, batch_id: str) -> bool:
    payload: Any = callback.payload
    if not isinstance(payload, dict) or payload.get("type") != "batch.completed":
        return False
    data = payload.get("data")
    return isinstance(data, dict) and data.get("id") == batch_id and data.get("status") == "done"


def callback_counts(receiver: CallbackReceiver, batch_id: str | None) -> CallbackCounts:
    """What the receiver has so far, the batch's callback counted apart from the operations' ones."""
    with receiver.cond:
        batch = [r for r in receiver.received if batch_id is not None and _is_batch_completed(r, batch_id)]
        batch_webhooks = {r.headers.get("webhook-id") for r in batch}
        received = len(receiver.webhook_ids - batch_webhooks)
        verified = len(receiver.verified) - (1 if batch_id in receiver.verified else 0)
        return CallbackCounts(received, verified, receiver.rejected, len(batch))
