"""HTTP plumbing of the ingress: problem+json errors, the streaming body cap, JSON parsing.

Every error the ingress answers is an RFC 9457 problem document built here;
``BodyLimit`` refuses bodies over their route's cap (1 MiB, 16 MiB for
``POST /v1/batches``) while they stream in, so an oversized request is never
buffered. The dependencies every route shares (the ``BridgeClient``, the
parsed body) and the item-by-item check of a list of operations live here too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any, cast

import redis
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from optimum_bridge.errors import BridgeUnavailable, field_problems
from optimum_bridge.producer import MAX_BATCH, BridgeClient
from optimum_bridge.schemas import JobState, Operation

log = logging.getLogger(__name__)


MAX_BODY_BYTES = 1024 * 1024
#: The cap of ``POST /v1/batches``: 10,000 operations of ~1.6 KiB each.
BATCH_BODY_BYTES = 16 * 1024 * 1024
#: Routes whose bodies may be larger than ``MAX_BODY_BYTES`` (exact paths).
LARGER_BODIES: Mapping[str, int] = {"/v1/batches": BATCH_BODY_BYTES}
PROBLEM_JSON = "application/problem+json"
CHALLENGE = {"WWW-Authenticate": "Bearer"}


class FieldError(BaseModel):
    """One rejected field: ``path``, ``callback.url``, ``operations[1].method``..."""

    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document: the body of every error."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class Accepted(BaseModel):
    """A queued operation (202); a repeated idempotency key adds the job's status fields (200)."""

    id: str
    status: JobState
    links: dict[str, str]


class BatchItem(BaseModel):
    """One operation of a batch: its job id, and False for an idempotent repeat."""

    id: str
    created: bool


class BatchAccepted(BaseModel):
    """The batch's job ids, in submission order."""

    results: list[BatchItem]


class OperationBatch(BaseModel):
    """The body of ``POST /v1/operations:batch`` (for the OpenAPI document; checked item by item)."""

    operations: list[Operation] = Field(min_length=1, max_length=MAX_BATCH)


class ProblemError(HTTPException):
    """Ends a request with a problem response, optionally listing the rejected fields."""

    def __init__(
        self, status: int, detail: str, *, errors: list[FieldError] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, detail, headers)
        self.errors = errors


def problem(
    status: int, detail: str, *, errors: list[FieldError] | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response (RFC 9457)."""
    body = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors)
    content = body.model_dump(mode="json", exclude_none=True)
    return JSONResponse(content, status, headers=headers, media_type=PROBLEM_JSON)


def rejected(errors: list[FieldError], *, status: int = 422) -> ProblemError:
    """A validation problem: ``detail`` names the first field, ``errors`` lists them all (up to 100)."""
    return ProblemError(status, f"{errors[0].field}: {errors[0].message}", errors=errors[:100])


def invalid(line: str, *, status: int = 422) -> ProblemError:
    """A validation problem from a ``field: message`` line (as ``InvalidOperation`` words them)."""
    field, _, message = line.partition(": ")
    return rejected([FieldError(field=field, message=message)], status=status)


def field_errors(exc: ValidationError, *, prefix: str = "") -> list[FieldError]:
    """Every error of a validation, each named as ``errors.first_problem`` names the first."""
    problems = field_problems(exc.errors(include_input=False, include_url=False), prefix=prefix, whole="operation")
    return [FieldError(field=field, message=message) for field, message in problems]


async def handle_error(request: Request, exc: Exception) -> Response:
    """Every error as problem+json; never the details of an unexpected one."""
    if isinstance(exc, HTTPException):
        errors = exc.errors if isinstance(exc, ProblemError) else None
        return problem(exc.status_code, str(exc.detail), errors=errors, headers=exc.headers)
    if isinstance(exc, RequestValidationError):
        errors = [FieldError(field=field, message=message) for field, message in field_problems(exc.errors())]
        return problem(422, f"{errors[0].field}: {errors[0].message}", errors=errors)
    if isinstance(exc, BridgeUnavailable):  # not replicated in time: the same request, again, is safe
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return problem(503, str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, redis.RedisError):
        log.warning("%s %s: Redis unavailable (%s)", request.method, request.url.path, type(exc).__name__)
        return problem(503, "the job store (Redis) is unavailable", headers={"Retry-After": "5"})
    log.error("%s %s: unexpected error", request.method, request.url.path, exc_info=exc)
    return problem(500, "unexpected error; it has been logged")


def checked_operations(items: list[Any]) -> list[Operation]:
    """Every item as an ``Operation``, or one 422 listing the errors of all of them (``operations[i].field``)."""
    operations: list[Operation] = []
    errors: list[FieldError] = []
    for index, item in enumerate(items):
        try:
            operations.append(Operation.model_validate(item))
        except ValidationError as exc:
            errors += field_errors(exc, prefix=f"operations[{index}]")
    if errors:
        raise rejected(errors)
    return operations


class BodyTooLarge(Exception):
    """Raised by ``BodyLimit`` inside ``receive`` once the cap is passed."""


class BodyLimit:
    """Pure-ASGI middleware: 413 for a body over its cap, counted as it streams in.

    The cap is ``max_bytes``, or ``larger[path]`` for the paths named there.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})

    def cap(self, scope: Scope) -> int:
        """The body cap of the request ``scope`` describes."""
        return self.larger.get(str(scope.get("path", "")), self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap(scope)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            await self._refuse(cap, scope, receive, send)
            return
        received, started = 0, False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > cap:
                raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(cap, scope, receive, send)

    async def _refuse(self, cap: int, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"body: larger than the {cap} bytes allowed"
        await problem(413, detail, headers={"Connection": "close"})(scope, receive, send)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(request: Request) -> Any:
    """The request body parsed as JSON; 400 naming ``body`` when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise invalid(f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", status=400) from None
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise invalid(f"body: not valid JSON ({reason})", status=400) from None


def get_bridge(request: Request) -> BridgeClient:
    """The app's ``BridgeClient``."""
    return cast(BridgeClient, request.app.state.bridge)


Bridge = Annotated[BridgeClient, Depends(get_bridge)]
JsonBody = Annotated[Any, Depends(json_body)]
