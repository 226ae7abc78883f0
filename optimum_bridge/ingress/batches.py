"""Batches over HTTP (spec §11): ``POST /v1/batches`` and ``GET /v1/batches/{id}``.

A thin layer over ``BridgeClient.submit_batch`` and ``get_batch``. Every
operation is checked before anything is written, item by item as
``POST /v1/operations:batch`` checks them, so one bad item is a 422 naming
``operations[i].field`` and queues nothing. The API-key check is added where
the router is included (``ingress.app``); the 16 MiB body cap of this route
is ``http.LARGER_BODIES``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRouter
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from optimum_bridge.ingress.auth import CallerDep
from optimum_bridge.ingress.http import (
    Bridge,
    JsonBody,
    Problem,
    ProblemError,
    checked_operations,
    field_errors,
    invalid,
    rejected,
)
from optimum_bridge.jobs.batches import BatchNotFound
from optimum_bridge.producer import InvalidOperation
from optimum_bridge.schemas import MAX_BATCH_OPERATIONS, BatchStatus, Callback, Operation, ShortText


class BatchOptions(BaseModel):
    """What a batch carries besides its operations."""

    model_config = ConfigDict(extra="forbid")

    callback: Callback | None = Field(default=None, description="where the one `batch.completed` callback goes")
    metadata: dict[ShortText, JsonValue] = Field(
        default_factory=dict, max_length=50, description="echoed in the batch's status and callback"
    )


class BatchRequest(BatchOptions):
    """The body of ``POST /v1/batches`` (for the OpenAPI document; checked item by item)."""

    operations: list[Operation] = Field(min_length=1, max_length=MAX_BATCH_OPERATIONS)


class BatchCreated(BaseModel):
    """A queued batch (202): its id, its jobs' ids in submission order, where to follow it."""

    id: str
    status: Literal["running"] = "running"
    total: int
    job_ids: list[str]
    links: dict[str, str]


router = APIRouter(prefix="/v1/batches", tags=["batches"])


def _operations_of(payload: Any) -> list[Operation]:
    """The batch's operations, every item checked; 422 naming ``operations`` or ``operations[i].field``."""
    items = payload.get("operations") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_OPERATIONS:
        raise invalid(f'operations: expected {{"operations": [...]}} with 1 to {MAX_BATCH_OPERATIONS} operations')
    return checked_operations(items)


def _options_of(payload: dict[str, Any]) -> BatchOptions:
    """The batch's callback and metadata; 422 naming ``callback.url``, ``metadata...`` or an unknown member."""
    try:
        return BatchOptions.model_validate({k: v for k, v in payload.items() if k != "operations"})
    except ValidationError as exc:
        raise rejected(field_errors(exc)) from None


def _body() -> dict[str, Any]:
    schema = {"$ref": "#/components/schemas/BatchRequest"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("", status_code=202, response_model=BatchCreated, openapi_extra=_body())
def submit_batch(payload: JsonBody, bridge: Bridge, caller: CallerDep) -> JSONResponse:
    """Queue up to 10,000 operations as one batch; one invalid item (or callback) queues none."""
    operations = _operations_of(payload)
    caller.check(operations)
    options = _options_of(payload)
    try:
        batch = bridge.submit_batch(operations, callback=options.callback, metadata=options.metadata)
    except InvalidOperation as exc:  # a callback URL refused by the SSRF rules, the batch's or an item's
        raise invalid(str(exc)) from None
    links = {"self": f"/v1/batches/{batch.id}"}
    content = BatchCreated(id=batch.id, total=len(batch.job_ids), job_ids=batch.job_ids, links=links)
    return JSONResponse(content.model_dump(mode="json"), status_code=202, headers={"Location": links["self"]})


@router.get("/{batch_id}", response_model=BatchStatus, responses={404: {"model": Problem}})
def get_batch(batch_id: str, bridge: Bridge, caller: CallerDep) -> Response:
    """The batch's counts by state and, while it runs, when it should be done."""
    try:
        accounts = bridge.batch_accounts(batch_id)
        status = bridge.get_batch(batch_id)
    except BatchNotFound:
        accounts = None
    if accounts is None or not all(caller.may_use(account) for account in accounts):
        raise ProblemError(404, "no batch with this id (unknown, or past its retention)") from None
    return Response(status.model_dump_json(), media_type="application/json")
