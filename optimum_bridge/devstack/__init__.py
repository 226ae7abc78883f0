"""The development harness the demo, the tests and the benchmarks share.

Everything runs on loopback and is started and stopped by the caller:
``ports`` finds free ports, ``waiting`` waits for conditions, ``processes``
starts and stops children, ``redis_server`` runs a private ``redis-server``,
``env`` builds the environment of a bridge process, ``workers`` runs worker
processes, ``verify`` checks Standard Webhooks signatures and ``receiver`` is
the callback receiver. No module imports a test-only package at import time.
"""

from __future__ import annotations

from optimum_bridge.devstack.env import SOURCE_ROOT, bridge_settings, child_env, new_callback_secret, settings_from
from optimum_bridge.devstack.ports import LOOPBACK, free_port
from optimum_bridge.devstack.receiver import CallbackReceiver, Received
from optimum_bridge.devstack.redis_server import (
    RedisBinary,
    RedisServer,
    RedisUnavailable,
    answers,
    delete_prefix,
    find_binary,
    start_redis,
)
from optimum_bridge.devstack.waiting import WaitTimeout, wait_on, wait_until
from optimum_bridge.devstack.workers import WorkerFailed, WorkerProcess, start_worker, stop_workers, wait_ready

__all__ = [
    "LOOPBACK",
    "SOURCE_ROOT",
    "CallbackReceiver",
    "Received",
    "RedisBinary",
    "RedisServer",
    "RedisUnavailable",
    "WaitTimeout",
    "WorkerFailed",
    "WorkerProcess",
    "answers",
    "bridge_settings",
    "child_env",
    "delete_prefix",
    "find_binary",
    "free_port",
    "new_callback_secret",
    "settings_from",
    "start_redis",
    "start_worker",
    "stop_workers",
    "wait_on",
    "wait_ready",
    "wait_until",
]
