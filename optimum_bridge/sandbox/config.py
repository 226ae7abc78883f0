"""The sandbox's knobs and admin payloads, validated with pydantic.

``SandboxConfig`` holds every knob of the simulator (quota, latency, errors,
clients, fleet); ``FaultSpec`` / ``FaultResponse`` describe scripted answers
queued through ``POST /_sandbox/faults``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from optimum_bridge.errors import field_problems, one_line

_QUOTA_RE = re.compile(r"^\s*(\d+)\s*/\s*([smh])\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}

#: How the sandbox states its quota on every answer: not at all (the real API is not known to),
#: the IETF draft's ``RateLimit-Policy`` / ``RateLimit``, or ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset``.
HeaderStyle = Literal["none", "ietf", "x"]


def parse_quota(quota: str) -> tuple[int, float]:
    """``"30/m"`` → ``(30, 60.0)``: calls allowed and window length in seconds."""
    match = _QUOTA_RE.match(quota)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"quota must look like N/s, N/m or N/h with N >= 1, got {quota!r}")
    return int(match.group(1)), _UNIT_SECONDS[match.group(2)]


class SandboxConfig(BaseModel):
    """Every knob of the simulator; all can be changed at runtime."""

    model_config = ConfigDict(extra="forbid")

    quota: str | None = "30/m"
    retry_after: bool = True
    latency_ms: float = Field(default=0.0, ge=0)
    latency_jitter_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=503, ge=400, le=599)
    token_lifetime_s: int = Field(default=30_734_400, ge=1)
    clients: dict[str, str] = Field(default_factory=lambda: {"sandbox-client": "sandbox-secret"})
    client_quotas: dict[str, str | None] = Field(default_factory=dict)  # a client's own quota (None: unlimited)
    rate_limit_headers: HeaderStyle = "none"
    client_rate_limit_headers: dict[str, HeaderStyle] = Field(default_factory=dict)  # a client's own style
    wrap_lists: bool = False
    seed: int = 42
    fleet_size: int = Field(default=60, ge=0, le=10_000)

    @field_validator("quota")
    @classmethod
    def _check_quota(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quota(value)
        return value

    @field_validator("client_quotas")
    @classmethod
    def _check_client_quotas(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        for quota in value.values():
            if quota is not None:
                parse_quota(quota)
        return value

    def quota_limit(self, client_id: str | None = None) -> tuple[int, float] | None:
        """The parsed quota of ``client_id`` (its own, else the shared one), or None when unlimited."""
        quota = self.client_quotas.get(client_id, self.quota) if client_id is not None else self.quota
        return None if quota is None else parse_quota(quota)

    def header_style(self, client_id: str) -> HeaderStyle:
        """How the answers to ``client_id`` state its quota."""
        return self.client_rate_limit_headers.get(client_id, self.rate_limit_headers)

    def public(self) -> dict[str, Any]:
        """The knobs as JSON, with client secrets masked."""
        data = self.model_dump()
        data["clients"] = {client_id: "***" for client_id in self.clients}
        return data


def validation_message(exc: ValidationError) -> str:
    """One line naming each offending field."""
    problems = field_problems(exc.errors(include_input=False, include_url=False), whole="body")
    return "; ".join(one_line(problem) for problem in problems)


class FaultResponse(BaseModel):
    """One scripted answer."""

    model_config = ConfigDict(extra="forbid")

    status: int = Field(ge=200, le=599)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    delay_ms: float = Field(default=0.0, ge=0)
    #: Instead of ``body``: a JSON object of exactly this many bytes (``{"padding": "xx…"}``), streamed,
    #: so a test can send an answer far larger than the bridge may read without building it in memory.
    padded_to_bytes: int | None = Field(default=None, ge=16, le=2**31)

    def json_body(self) -> Any:
        """The body to send: the given one, or a default error object when absent."""
        if "body" in self.model_fields_set:
            return self.body
        return {"error": "scripted_fault", "status": self.status}


class FaultSpec(BaseModel):
    """Scripted answers for requests matching ``method`` and ``path`` (``*`` = prefix)."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = None
    path: str = Field(pattern=r"^/")
    responses: list[FaultResponse] = Field(min_length=1)

    def matches(self, method: str, path: str) -> bool:
        """Does a request with this method and path consume this rule's answers?"""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path
