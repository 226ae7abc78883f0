"""The bench's callback receiver and the services every benchmark starts first.

The receiver is the harness's (``optimum_bridge.devstack.receiver``) in a thread
of the bench process, at ``http://127.0.0.1:<port>/hook``: every callback is
verified (the ``standardwebhooks`` library, an independent implementation of
the spec) and its arrival timed with ``time.monotonic``, the clock every
process on the machine shares. It keeps counts and arrival times, not bodies.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from optimum_bridge.devstack import CallbackReceiver, RedisServer

from .common import CALLBACK_SECRET, SandboxProc, start_redis, start_sandbox


def start_receiver() -> CallbackReceiver:
    """A receiver verifying with the bench's secret, already serving."""
    return CallbackReceiver(CALLBACK_SECRET, keep_bodies=False).start()


def start_services(
    stop: ExitStack, workdir: Path, *, quota: str | None
) -> tuple[RedisServer, SandboxProc, CallbackReceiver]:
    """A private Redis, the sandbox and a receiver, each stopped when ``stop`` closes."""
    redis_proc = start_redis(workdir)
    stop.callback(redis_proc.stop)
    sandbox = start_sandbox(workdir, quota=quota)
    stop.callback(sandbox.stop)
    receiver = start_receiver()
    stop.callback(receiver.stop)
    return redis_proc, sandbox, receiver
