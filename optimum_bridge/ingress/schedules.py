"""Schedules over HTTP (spec §15): ``PUT``/``PATCH``/``DELETE``/``POST :run`` with an admin key, ``GET`` with any.

A thin layer over ``schedules.store`` and ``schedules.runner``. A schedule is
checked whole when saved (every template rendered for a tick now), so a bad
one is a 422 naming the field, in one line. The accounts file's schedules are
listed with ``"origin": "file"`` and cannot be replaced or deleted here (409);
they can be paused, as pausing changes no definition. A key limited to some
accounts sees only their schedules (another answers 404, as an unknown one).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError

from optimum_bridge.callbacks.ssrf import check_callback_url
from optimum_bridge.errors import BridgeError, first_problem
from optimum_bridge.ingress.accounts import account_store
from optimum_bridge.ingress.auth import AdminDep, Caller, CallerDep
from optimum_bridge.ingress.http import Bridge, JsonBody, Problem, ProblemError, invalid
from optimum_bridge.schedules.model import SCHEDULE_NAME, Schedule
from optimum_bridge.schedules.outlook import ScheduleView, show
from optimum_bridge.schedules.runner import ScheduleRunner
from optimum_bridge.schedules.store import Defined

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])
ANSWERS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (403, 404, 409)}
GONE = "no schedule with this name"
READ_ONLY = "schedule {name!r} comes from the accounts file: change it there"


class Pause(BaseModel):
    """The body of ``PATCH /v1/schedules/{name}``."""

    model_config = ConfigDict(extra="forbid")

    paused: StrictBool


class RunStarted(BaseModel):
    """What ``POST /v1/schedules/{name}:run`` made: a batch id, ``source:<job id>``, or why none."""

    name: str
    outcome: str


def _runner(request: Request) -> ScheduleRunner:
    runner: ScheduleRunner = request.app.state.schedules
    runner.sync()  # the accounts file's schedules are listed before any worker has started
    return runner


def _visible(runner: ScheduleRunner, caller: Caller, name: str) -> Defined:
    defined = runner.store.get(name)
    if defined is None or not caller.may_use(defined.schedule.account):
        raise ProblemError(404, GONE)
    return defined


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


@router.get("", response_model=list[ScheduleView])
def list_schedules(request: Request, bridge: Bridge, caller: CallerDep) -> JSONResponse:
    """Every schedule the key may see, by name, with its next ticks."""
    runner = _runner(request)
    views = [
        show(runner.store, bridge.settings, name, defined).model_dump(mode="json")
        for name, defined in runner.store.all().items()
        if caller.may_use(defined.schedule.account)
    ]
    return JSONResponse(views)


@router.get("/{name}", response_model=ScheduleView, responses=ANSWERS)
def get_schedule(name: str, request: Request, bridge: Bridge, caller: CallerDep) -> Response:
    """A schedule: its next 5 ticks (UTC and local), the next run's ``estimated_done_at``, any warning."""
    runner = _runner(request)
    return _json(show(runner.store, bridge.settings, name, _visible(runner, caller, name)))


def _body(name: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


REFUSALS: dict[int | str, dict[str, Any]] = {**ANSWERS, 422: {"model": Problem}}


@router.put("/{name}", response_model=ScheduleView, responses=REFUSALS, openapi_extra=_body("Schedule"))
def put_schedule(name: str, payload: JsonBody, request: Request, bridge: Bridge, caller: AdminDep) -> Response:
    """Create or replace a schedule (admin key): 201 when new, 200 when replaced."""
    if not re.fullmatch(SCHEDULE_NAME, name):
        raise invalid(f"name: {name!r} does not match {SCHEDULE_NAME}")
    try:
        schedule = Schedule.model_validate(payload)
    except ValidationError as exc:
        raise invalid(first_problem(exc)) from None
    if not account_store(request, bridge).exists(schedule.account):  # the file's, or created at runtime
        raise invalid(f"account: unknown account {schedule.account!r}")
    if schedule.callback is not None:
        try:
            check_callback_url(str(schedule.callback.url), allow_private=bridge.settings.callback_allow_private)
        except BridgeError as exc:
            raise invalid(str(exc)) from None
    runner = _runner(request)
    current = runner.store.get(name)
    if current is not None and current.origin == "file":
        raise ProblemError(409, READ_ONLY.format(name=name))
    runner.store.put(name, schedule)
    defined = Defined(schedule=schedule)
    return _json(show(runner.store, bridge.settings, name, defined), 201 if current is None else 200)


@router.patch("/{name}", response_model=ScheduleView, responses=REFUSALS, openapi_extra=_body("Pause"))
def pause_schedule(name: str, payload: JsonBody, request: Request, bridge: Bridge, caller: AdminDep) -> Response:
    """Pause (``{"paused": true}``: its ticks pass without a batch) or resume a schedule (admin key)."""
    runner = _runner(request)
    defined = _visible(runner, caller, name)
    try:
        pause = Pause.model_validate(payload)
    except ValidationError as exc:
        raise invalid(first_problem(exc)) from None
    runner.store.set_paused(name, pause.paused)
    return _json(show(runner.store, bridge.settings, name, defined))


@router.post("/{name}:run", status_code=202, response_model=RunStarted, responses=ANSWERS)
def run_schedule(name: str, request: Request, caller: AdminDep) -> Response:
    """One tick now, out of the schedule's own (admin key): its batch, or its source job."""
    runner = _runner(request)
    _visible(runner, caller, name)
    return _json(RunStarted(name=name, outcome=runner.run_now(name)), 202)


@router.delete("/{name}", status_code=204, responses=ANSWERS)
def delete_schedule(name: str, request: Request, caller: AdminDep) -> Response:
    """Remove a schedule (admin key); its batches already made go on."""
    runner = _runner(request)
    defined = _visible(runner, caller, name)
    if defined.origin == "file":
        raise ProblemError(409, READ_ONLY.format(name=name))
    runner.store.delete(name)
    return Response(status_code=204)
