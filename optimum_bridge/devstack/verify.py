"""Checking a Standard Webhooks signature, as a producer's callback endpoint would.

``make_verifier`` uses the ``standardwebhooks`` package when it is importable
(an independent implementation of the spec, so a bug in our signing cannot
hide behind the same bug in our checking), else ``builtin_verifier``: the
bridge's own ``callbacks.signing.sign`` with a constant-time comparison and the
spec's 5-minute timestamp tolerance. Either raises ``SignatureError``.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from optimum_bridge.callbacks.signing import sign

TOLERANCE_S = 300
BUILTIN = "optimum_bridge.callbacks.signing.sign + hmac.compare_digest"

Verify = Callable[[bytes, Mapping[str, str]], Any]


class SignatureError(ValueError):
    """A callback whose headers or signature do not verify."""


def builtin_verifier(secret: str) -> Verify:
    """Verify with the bridge's own signing; returns the decoded JSON body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))

    def verify(body: bytes, headers: Mapping[str, str]) -> Any:
        msg_id, stamp, signatures = (
            headers.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
        )
        if not (msg_id and stamp.isdigit() and signatures):
            raise SignatureError("missing or malformed webhook headers")
        if abs(time.time() - int(stamp)) > TOLERANCE_S:
            raise SignatureError("timestamp outside the tolerance")
        expected = sign(key, msg_id, int(stamp), body).encode()
        if not any(hmac.compare_digest(expected, given.encode()) for given in signatures.split()):
            raise SignatureError("no matching signature")
        return json.loads(body)

    return verify


def make_verifier(secret: str) -> tuple[Verify, str]:
    """A verify function for ``secret`` and the name of what it uses."""
    try:
        from standardwebhooks.webhooks import Webhook  # noqa: PLC0415 - the test extra, optional
    except ImportError:
        return builtin_verifier(secret), BUILTIN
    webhook = Webhook(secret)

    def verify(body: bytes, headers: Mapping[str, str]) -> Any:
        try:
            return webhook.verify(body, dict(headers))
        except Exception as exc:  # the library raises its own error types
            raise SignatureError(str(exc)) from exc

    return verify, "standardwebhooks"
