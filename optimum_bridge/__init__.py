"""optimum-bridge: queue Optimum Automotive API calls in Redis, run them with one
token inside one global quota, and deliver signed callbacks."""

from __future__ import annotations

from .errors import BridgeError, ConfigError, JobNotFound
from .producer import BridgeClient, InvalidOperation
from .schemas import CallbackEvent, JobStatus, Operation
from .settings import Settings, load_settings

__all__ = [
    "BridgeClient",
    "BridgeError",
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
