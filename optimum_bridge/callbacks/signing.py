"""Where a callback is signed: Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).

The key is ``BRIDGE_CALLBACK_SECRET`` (``whsec_`` + base64, decoded by
``config.values.callback_key``). The signature is recomputed at every delivery
attempt with a fresh timestamp; the id stays the same, so receivers can
de-duplicate. Any Standard Webhooks library verifies it (the tests use one).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.ts.body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def message_id(subject: str) -> str:
    """The ``webhook-id`` of a job's (or ``batch:<id>``'s) callback: the same for every retry."""
    return f"msg_{subject.replace(':', '_')}"
