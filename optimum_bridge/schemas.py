"""Pydantic models of everything that crosses a boundary.

``Operation`` is what producers submit; ``JobStatus`` is what they read back,
by polling or in the ``data`` of a ``CallbackEvent``; ``TokenResponse`` is the
identity server's answer. The path rules of the spec (§4) live in
``Operation`` so an invalid operation can never be queued.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from optimum_bridge.errors import first_problem

HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Priority = Literal["urgent", "normal", "bulk"]
JobState = Literal["queued", "running", "retrying", "succeeded", "failed", "cancelled"]
#: Every state, in the order a job goes through them (``/ui`` lists them so).
JOB_STATES: tuple[JobState, ...] = ("queued", "retrying", "running", "succeeded", "failed", "cancelled")
#: A job waiting for a slot (in its lane, or due again later); ``lua/_prelude.lua`` has the same two.
WAITING_STATES: frozenset[str] = frozenset({"queued", "retrying"})
#: A job that will never change again (``is_final`` in ``lua/_prelude.lua``).
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
#: The most operations one batch may hold (spec §11).
MAX_BATCH_OPERATIONS = 10_000
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "PUT", "DELETE"})
#: The oldest answer an operation's ``max_age_s`` may accept (a day).
MAX_AGE_S = 86400

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
QueryScalar = str | int | float | bool
QueryValue = QueryScalar | list[QueryScalar]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
#: An account's name: it appears in Redis keys and in Celery messages built in Lua.
ACCOUNT_NAME = r"^[A-Za-z0-9_-]{1,64}$"


def check_path(path: str) -> str:
    """Refuse anything that could send the token to another host (spec §4)."""
    if not path.startswith("/"):
        raise ValueError("must start with '/' (relative to the API base)")
    if path.startswith("//") or path.startswith("/\\"):
        raise ValueError("must not start with '//' (that names another host)")
    if _CONTROL.search(path) or _CONTROL.search(unquote(path)):
        raise ValueError("must not contain control characters")
    if "\\" in path or "\\" in unquote(path):
        raise ValueError("must not contain backslashes")
    if "?" in path or "#" in path:
        raise ValueError("must not contain '?' or '#': put parameters in 'query'")
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        raise ValueError("must not contain a scheme or a host")
    segments = unquote(unquote(path)).split("/")
    if any(segment in {".", ".."} for segment in segments):
        raise ValueError("must not contain '.' or '..' segments")
    return path


class Callback(BaseModel):
    """Where to POST the outcome. Reachability rules are checked by ``callbacks.ssrf``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: AnyHttpUrl

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: AnyHttpUrl) -> AnyHttpUrl:
        if url.username or url.password:
            raise ValueError("must not carry credentials (user:password@)")
        if len(str(url)) > 2048:
            raise ValueError("must be at most 2048 characters")
        return url


class Operation(BaseModel):
    """One HTTP call to the API, as submitted by a producer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: HttpMethod
    path: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    query: dict[ShortText, QueryValue] = Field(default_factory=dict, max_length=100)
    body: JsonValue = None
    callback: Callback | None = None
    idempotency_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")] | None
    ) = None
    metadata: dict[ShortText, JsonValue] = Field(default_factory=dict, max_length=50)
    priority: Priority = "normal"
    account: Annotated[str, StringConstraints(pattern=ACCOUNT_NAME)] = "default"
    not_before: datetime | None = None  # not started earlier (UTC when no offset is given)
    # spec §13: a GET joins an identical GET's call (False: it makes its own), and with max_age_s
    # also takes the answer of one that succeeded at most that many seconds ago.
    coalesce: bool = True
    max_age_s: float = Field(default=0, ge=0, le=MAX_AGE_S)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_path(value)

    @field_validator("not_before")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    @model_validator(mode="after")
    def _reads_only(self) -> Operation:
        if self.max_age_s and self.method != "GET":
            raise ValueError(f"max_age_s applies to a GET only (this is a {self.method})")
        return self

    @property
    def idempotent(self) -> bool:
        """Whether re-sending after an unknown outcome is safe."""
        return self.method in IDEMPOTENT_METHODS or self.idempotency_key is not None


class OperationEcho(BaseModel):
    """The part of the operation echoed in statuses and callbacks."""

    method: HttpMethod
    path: str
    query: dict[str, QueryValue] = Field(default_factory=dict)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class ApiResponse(BaseModel):
    """The API's answer: status, a few headers, the JSON (or text) body."""

    status_code: int
    headers: dict[str, str] = Field(default_factory=dict)
    body: JsonValue = None


class ErrorInfo(BaseModel):
    """Why a job failed (or why the last attempt did)."""

    kind: str
    message: str


class JobStatus(BaseModel):
    """A job as producers see it; also the ``data`` of a callback (spec §6, §11).

    ``position`` (jobs that will start before it on its account, given what is
    queued now) and ``estimated_start_at`` are set only while it waits.
    """

    id: str
    status: JobState
    priority: Priority = "normal"
    account: str = "default"
    operation: OperationEcho
    response: ApiResponse | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    position: int | None = None
    estimated_start_at: datetime | None = None
    coalesced_with: str | None = None  # the job whose call (or fresh answer) served this one (spec §13)

    @property
    def finished(self) -> bool:
        """Whether the job reached a final state."""
        return self.status in FINAL_STATES


class CallbackEvent(BaseModel):
    """The body POSTed to the producer's callback URL."""

    type: Literal["operation.succeeded", "operation.failed", "operation.cancelled"]
    timestamp: str
    data: JobStatus


class BatchMeta(BaseModel):
    """A batch's metadata, checked like an operation's (echoed in its status and callback)."""

    metadata: dict[ShortText, JsonValue] = Field(default_factory=dict, max_length=50)


class BatchCounts(BaseModel):
    """A batch's jobs by state."""

    queued: int = 0
    running: int = 0
    retrying: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0


class BatchStatus(BaseModel):
    """A batch as producers see it; also the ``data`` of its ``batch.completed`` callback."""

    id: str
    status: Literal["running", "done"]
    total: int
    counts: BatchCounts
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    submitted_at: datetime
    finished_at: datetime | None = None
    estimated_done_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether every job of the batch is final."""
        return self.status == "done"


class BatchEvent(BaseModel):
    """The body of the ``batch.completed`` callback."""

    type: Literal["batch.completed"] = "batch.completed"
    timestamp: str
    data: BatchStatus


class Batch(BaseModel):
    """A submitted batch: its id and its jobs' ids, in submission order."""

    id: str
    job_ids: list[str]


class TokenResponse(BaseModel):
    """The identity server's client-credentials answer."""

    model_config = ConfigDict(extra="ignore")

    access_token: SecretStr = Field(min_length=1)
    expires_in: int = Field(gt=0)
    token_type: str = "Bearer"  # noqa: S105 - a scheme name, not a secret

    @field_validator("token_type")
    @classmethod
    def _bearer(cls, value: str) -> str:
        if value.lower() != "bearer":
            raise ValueError("expected a Bearer token")
        return value


def echo(operation: Operation) -> OperationEcho:
    """The echoed part of an operation."""
    return OperationEcho(
        method=operation.method, path=operation.path, query=operation.query, metadata=operation.metadata
    )


def first_error(exc: Any) -> str:
    """One line naming the offending field of an operation's ``ValidationError``."""
    return first_problem(exc, whole="operation")
