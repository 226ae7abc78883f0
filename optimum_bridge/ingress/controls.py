"""Controls over waiting work (spec §11a): cancel a job or a whole batch, move a job to another lane.

A job that has not started its call can be cancelled (it ends ``cancelled``,
makes no call, and its callback is ``operation.cancelled``) or moved; one whose
call is under way, or that is finished, answers 409 and goes on as it was.
Ids of another account than the key's answer 404, as unknown ones.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, ValidationError

from optimum_bridge.errors import JobNotFound, NotWaiting
from optimum_bridge.ingress.auth import Caller, CallerDep
from optimum_bridge.ingress.http import Bridge, JsonBody, Problem, ProblemError, field_errors, rejected
from optimum_bridge.jobs.batches import BatchNotFound
from optimum_bridge.schemas import BatchStatus, JobStatus, Priority

GONE = "no operation with this id (unknown, or past its retention)"
router = APIRouter(tags=["controls"])
CONFLICT: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, 409: {"model": Problem}}


class Move(BaseModel):
    """The body of ``PATCH /v1/operations/{id}``."""

    model_config = ConfigDict(extra="forbid")

    priority: Priority


def _visible_job(bridge: Bridge, caller: Caller, job_id: str) -> None:
    try:
        account = bridge.get(job_id).account
    except JobNotFound:
        raise ProblemError(404, GONE) from None
    if not caller.may_use(account):
        raise ProblemError(404, GONE)


def _json(model: JobStatus | BatchStatus) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")


@router.delete("/v1/operations/{job_id}", response_model=JobStatus, responses=CONFLICT)
def cancel_operation(job_id: str, bridge: Bridge, caller: CallerDep) -> Response:
    """Cancel a job that has not started its call: 200 with its status, 409 if its call is under way."""
    _visible_job(bridge, caller, job_id)
    try:
        return _json(bridge.cancel(job_id))
    except NotWaiting as exc:
        raise ProblemError(409, str(exc)) from None


@router.patch("/v1/operations/{job_id}", response_model=JobStatus, responses=CONFLICT)
def move_operation(job_id: str, payload: JsonBody, bridge: Bridge, caller: CallerDep) -> Response:
    """Move a waiting job to another lane (``{"priority": ...}``), keeping its age within the lane."""
    try:
        move = Move.model_validate(payload)
    except ValidationError as exc:
        raise rejected(field_errors(exc)) from None
    _visible_job(bridge, caller, job_id)
    try:
        return _json(bridge.reprioritize(job_id, move.priority))
    except NotWaiting as exc:
        raise ProblemError(409, str(exc)) from None


@router.delete("/v1/batches/{batch_id}", response_model=BatchStatus, responses=CONFLICT)
def cancel_batch(batch_id: str, bridge: Bridge, caller: CallerDep) -> Response:
    """Cancel every waiting job of a batch in one step; the batch then completes as usual."""
    try:
        accounts = bridge.batch_accounts(batch_id)
    except BatchNotFound:
        raise ProblemError(404, "no batch with this id (unknown, or past its retention)") from None
    if not all(caller.may_use(account) for account in accounts):
        raise ProblemError(404, "no batch with this id (unknown, or past its retention)")
    return _json(bridge.cancel_batch(batch_id))
