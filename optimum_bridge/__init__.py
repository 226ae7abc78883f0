"""optimum-bridge: queue Optimum Automotive API calls in Redis, run them with one
token inside one global quota, and deliver signed callbacks."""

from __future__ import annotations

from optimum_bridge.errors import BridgeError, BridgeUnavailable, ConfigError, JobNotFound
from optimum_bridge.producer import BridgeClient, InvalidOperation
from optimum_bridge.schemas import CallbackEvent, JobStatus, Operation
from optimum_bridge.settings import Settings, load_settings

__all__ = [
    "BridgeClient",
    "BridgeError",
    "BridgeUnavailable",
    "CallbackEvent",
    "ConfigError",
    "InvalidOperation",
    "JobNotFound",
    "JobStatus",
    "Operation",
    "Settings",
    "load_settings",
]
__version__ = "0.1.0"
