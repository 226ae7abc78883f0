"""optimum-bridge: queue Optimum Automotive API calls in Redis, run them with one
token inside one global quota, and deliver signed callbacks."""

from __future__ import annotations

from optimum_bridge.async_producer import AsyncBridgeClient
from optimum_bridge.errors import BridgeError, BridgeUnavailable, ConfigError, JobNotFound, NotWaiting
from optimum_bridge.producer import BridgeClient, InvalidOperation
from optimum_bridge.schemas import Batch, BatchStatus, CallbackEvent, JobStatus, Operation
from optimum_bridge.settings import Settings, load_settings

__all__ = [
    "AsyncBridgeClient",
    "Batch",
    "BatchStatus",
    "BridgeClient",
    "BridgeError",
    "BridgeUnavailable",
    "CallbackEvent",
    "ConfigError",
    "InvalidOperation",
    "JobNotFound",
    "JobStatus",
    "NotWaiting",
    "Operation",
    "Settings",
    "load_settings",
]
__version__ = "0.1.0"
