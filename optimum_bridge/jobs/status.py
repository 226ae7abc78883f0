"""A job as producers see it: the ``JobStatus`` built from its Redis hash's fields."""

from __future__ import annotations

from datetime import datetime

from optimum_bridge.keys import JobField
from optimum_bridge.schemas import WAITING_STATES, ApiResponse, ErrorInfo, JobStatus, Operation, echo


def _moment(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def shown_status(status: str, call_status: str | None) -> str:
    """What a job shows, given the status of the call it joined (spec §13; None: it joined none).

    A job waiting on a shared call is ``running`` while that call runs, as it
    would be had it made the call itself. The Lua scripts that control waiting
    jobs apply the same rule atomically (``call_running`` in ``lua/_prelude.lua``):
    such a job can no longer be cancelled or moved.
    """
    return "running" if status in WAITING_STATES and call_status == "running" else status


def to_status(job_id: str, fields: dict[str, str]) -> JobStatus:
    """Build a ``JobStatus`` from a job hash's decoded fields."""
    operation = Operation.model_validate_json(fields[JobField.op])
    response, error = fields.get(JobField.response), fields.get(JobField.error)
    return JobStatus(
        id=job_id,
        status=fields.get(JobField.status, "queued"),
        # A call lifted to the priority of the jobs waiting on it reports the one it was given.
        priority=fields.get(JobField.own_priority) or fields.get(JobField.priority, operation.priority),
        account=fields.get(JobField.account, operation.account),
        operation=echo(operation),
        response=ApiResponse.model_validate_json(response) if response else None,
        error=ErrorInfo.model_validate_json(error) if error else None,
        attempts=int(fields.get(JobField.attempts, 0)),
        submitted_at=datetime.fromisoformat(fields[JobField.submitted_at]),
        started_at=_moment(fields.get(JobField.started_at)),
        finished_at=_moment(fields.get(JobField.finished_at)),
        coalesced_with=fields.get(JobField.coalesced_with),
    )
