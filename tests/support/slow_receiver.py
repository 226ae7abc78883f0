"""A callback receiver that answers late: an endpoint slower than the API, for the system tests.

``devstack.CallbackReceiver`` answers at once; this one waits ``delay_s`` in the
request's own server thread before it records (and verifies) the callback and
answers, so every POST holds its sender for that long, as a slow producer endpoint
would. Requests are served concurrently (``ThreadingHTTPServer``), so several
late answers overlap as they would at a real endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from optimum_bridge.devstack import CallbackReceiver


class SlowReceiver(CallbackReceiver):
    """``CallbackReceiver`` whose every answer comes ``delay_s`` after the request arrived."""

    def __init__(self, secret: str | None = None, *, delay_s: float) -> None:
        super().__init__(secret)
        self.delay_s = delay_s

    def record(self, body: bytes, headers: Mapping[str, str], arrived: float) -> int:
        """Answer late: the delay is the behaviour under test, not a wait for an event."""
        time.sleep(self.delay_s)
        return super().record(body, headers, arrived)
