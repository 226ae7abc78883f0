"""The HTTP ingress (``optimum-bridge api``): submit and poll operations and batches over HTTP.

A thin FastAPI layer over ``BridgeClient``: operations are checked by the same
models and callback-URL rules as the Python client, so both name the
offending field the same way. ``/v1/*`` (operations here, batches in
``ingress.batches``) needs ``Authorization: Bearer <one of BRIDGE_API_KEYS>``,
checked before the body is read; ``/healthz``, ``/readyz`` and ``/metrics``
(``ingress.health``) are open; ``/ui`` (``ingress.ui``) is the dashboard,
behind the same keys as HTTP Basic. Every error is ``application/problem+json``
(RFC 9457), and request bodies are capped while they stream in (1 MiB, 16 MiB
for ``POST /v1/batches``), so an oversized body is never buffered.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import redis
import uvicorn
from fastapi import Depends, FastAPI, Header
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRouter
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from optimum_bridge import __version__
from optimum_bridge.accounts.model import AccountPatch, NewAccount
from optimum_bridge.errors import BridgeUnavailable, JobNotFound
from optimum_bridge.ingress.accounts import router as accounts
from optimum_bridge.ingress.auth import CallerDep, KeyRing, require_key
from optimum_bridge.ingress.batches import BatchRequest
from optimum_bridge.ingress.batches import router as batches
from optimum_bridge.ingress.controls import router as controls
from optimum_bridge.ingress.health import ops
from optimum_bridge.ingress.http import (
    LARGER_BODIES,
    MAX_BODY_BYTES,
    Accepted,
    BatchAccepted,
    BatchItem,
    BodyLimit,
    Bridge,
    JsonBody,
    OperationBatch,
    Problem,
    ProblemError,
    checked_operations,
    field_errors,
    handle_error,
    invalid,
    rejected,
)
from optimum_bridge.ingress.schedules import Pause
from optimum_bridge.ingress.schedules import router as schedules
from optimum_bridge.ingress.ui import router as dashboard
from optimum_bridge.ingress.ui import static as dashboard_static
from optimum_bridge.keys import Keys
from optimum_bridge.process.asgi import Listening, listening_server
from optimum_bridge.process.observability import init_sentry
from optimum_bridge.process.redis import check_eviction_policy
from optimum_bridge.producer import MAX_BATCH, BridgeClient, InvalidOperation
from optimum_bridge.schedules.model import Schedule
from optimum_bridge.schedules.runner import manual_runner
from optimum_bridge.schemas import JobStatus, Operation
from optimum_bridge.settings import Settings

log = logging.getLogger(__name__)


ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (400, 401, 413, 422, 503)}
v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=ERRORS, tags=["operations"])  # 401 first


def _body(name: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _with_header_key(payload: Any, header: str | None) -> dict[str, Any]:
    """The operation, with ``Idempotency-Key`` filling an absent ``idempotency_key``."""
    if not isinstance(payload, dict):
        raise invalid("body: expected a JSON object (the operation)")
    current = payload.get("idempotency_key")
    if header is None or current == header:
        return payload
    if current is None:
        return {**payload, "idempotency_key": header}
    raise invalid("idempotency_key: differs from the Idempotency-Key header")


@v1.post("/operations", status_code=202, response_model=Accepted, openapi_extra=_body("Operation"))
def submit_operation(
    payload: JsonBody,
    bridge: Bridge,
    caller: CallerDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Queue one operation: 202, or 200 with the existing job for a repeated idempotency key."""
    try:
        operation = Operation.model_validate(_with_header_key(payload, idempotency_key))
        caller.check([operation], single=True)
        [(job_id, created)] = bridge.submit_many_detailed([operation])
    except ValidationError as exc:
        raise rejected(field_errors(exc)) from None
    except InvalidOperation as exc:  # the callback URL; a lone operation is not "operations[0]"
        raise invalid(str(exc).removeprefix("operations[0].")) from None
    links = {"self": f"/v1/operations/{job_id}"}
    if created:
        # A GET with max_age_s may have been answered already, from a fresh identical one (spec 13).
        status = bridge.get(job_id).status if operation.max_age_s else "queued"
        content = Accepted(id=job_id, status=status, links=links).model_dump(mode="json")
        return JSONResponse(content, status_code=202, headers={"Location": links["self"]})
    return JSONResponse({**bridge.get(job_id).model_dump(mode="json"), "links": links}, status_code=200)


def _checked_batch(payload: Any) -> list[Operation]:
    """Every item as an ``Operation``, or one 422 listing the errors of all of them."""
    items = payload.get("operations") if isinstance(payload, dict) and len(payload) == 1 else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise invalid(f'operations: expected {{"operations": [...]}} with 1 to {MAX_BATCH} operations')
    return checked_operations(items)


@v1.post("/operations:batch", status_code=202, response_model=BatchAccepted, openapi_extra=_body("OperationBatch"))
def submit_batch(payload: JsonBody, bridge: Bridge, caller: CallerDep) -> JSONResponse:
    """Queue up to 1,000 operations in one Redis round trip; one invalid item queues none."""
    operations = _checked_batch(payload)
    caller.check(operations)
    try:
        results = bridge.submit_many_detailed(operations)
    except InvalidOperation as exc:
        raise invalid(str(exc)) from None
    content = BatchAccepted(results=[BatchItem(id=job_id, created=created) for job_id, created in results])
    return JSONResponse(content.model_dump(mode="json"), status_code=202)


@v1.get("/operations/{job_id}", response_model=JobStatus, responses={404: {"model": Problem}})
def get_operation(job_id: str, bridge: Bridge, caller: CallerDep) -> Response:
    """The job's status: the same JSON as the ``data`` of its callback."""
    try:
        status = bridge.get(job_id)
    except JobNotFound:
        status = None
    if status is None or not caller.may_use(status.account):  # another account's job is as unknown as none
        raise ProblemError(404, "no operation with this id (unknown, or past its retention)")
    return Response(status.model_dump_json(), media_type="application/json")


class IngressApp(FastAPI):
    """FastAPI whose OpenAPI document describes the request bodies the routes read themselves."""

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, with the ``Operation``, ``OperationBatch``, ``BatchRequest``, ``Schedule`` and
        ``Pause`` schemas."""
        fresh = self.openapi_schema is None
        schema = super().openapi()
        if fresh:
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (OperationBatch, BatchRequest, Schedule, Pause, NewAccount, AccountPatch):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update({**body.pop("$defs", {}), model.__name__: body})
        return schema


def create_app(settings: Settings, *, client: BridgeClient | None = None) -> FastAPI:
    """The ingress application (``client`` defaults to one built from ``settings``)."""
    app = IngressApp(title="optimum-bridge", version=__version__, description=__doc__ or "")
    bridge = client or BridgeClient(settings)
    app.state.bridge = bridge
    app.state.keys = Keys(bridge.settings.key_prefix)
    app.state.key_ring = KeyRing.of(settings)
    app.state.schedules = manual_runner(bridge)
    for kind in (HTTPException, RequestValidationError, redis.RedisError, BridgeUnavailable, Exception):
        app.add_exception_handler(kind, handle_error)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, larger=LARGER_BODIES)
    app.include_router(v1)
    app.include_router(batches, dependencies=[Depends(require_key)], responses=ERRORS)
    app.include_router(controls, dependencies=[Depends(require_key)], responses=ERRORS)
    app.include_router(schedules, dependencies=[Depends(require_key)], responses=ERRORS)
    app.include_router(accounts, dependencies=[Depends(require_key)], responses=ERRORS)
    app.include_router(ops)
    app.include_router(dashboard)
    app.mount("/ui/static", dashboard_static, name="ui-static")
    return app


def _announce(server: Listening) -> None:
    host = f"[{server.config.host}]" if ":" in server.config.host else server.config.host
    print(f"optimum-bridge ingress on http://{host}:{server.config.port} (docs at /docs)", flush=True)


def serve(settings: Settings) -> int:
    """Run the ingress on ``BRIDGE_API_HOST:BRIDGE_API_PORT`` until stopped; 2 without API keys."""
    if not KeyRing.of(settings):
        message = "BRIDGE_API_KEYS: required for the HTTP ingress (or [api_keys.NAME] in BRIDGE_ACCOUNTS_FILE)"
        print(f"optimum-bridge: configuration error: {message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    init_sentry(settings, component="ingress")
    app = create_app(settings)
    check_eviction_policy(app.state.bridge.redis)
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning", access_log=False)
    try:
        listening_server(config, _announce).run()
    except SystemExit as exc:  # uvicorn exits, after logging why, when it cannot listen
        return 1 if exc.code else 0
    return 0
