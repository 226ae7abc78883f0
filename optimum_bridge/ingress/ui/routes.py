"""The ``/ui`` routes: the dashboard, a job's status page, and the POSTs behind its buttons.

Every POST is checked by ``security.check_post`` (same site, the viewer's
CSRF token) before anything changes, then answers 303 back to the dashboard
with a note saying what happened. Ids of another account's jobs and batches
answer as unknown ones, as on the API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from optimum_bridge.callbacks.deliveries import BATCH, DeliveryStore
from optimum_bridge.errors import JobNotFound, NotWaiting
from optimum_bridge.ingress.http import ProblemError
from optimum_bridge.ingress.ui.accounts import accounts_table
from optimum_bridge.ingress.ui.data import gather, schedule_views
from optimum_bridge.ingress.ui.security import Viewer, ViewerDep, check_post
from optimum_bridge.jobs.batches import BatchNotFound
from optimum_bridge.keys import PRIORITIES, Keys
from optimum_bridge.producer import BridgeClient
from optimum_bridge.schedules.runner import ScheduleRunner
from optimum_bridge.schemas import JobStatus

HERE = Path(__file__).parent
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
templates = Jinja2Templates(env=_ENV)
static = StaticFiles(directory=HERE / "static")
router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)

#: What a note in ``/ui?note=...&id=...`` says (a fixed list: the query never puts free text on the page).
NOTES = {
    "cancelled": "Job {id} cancelled.",
    "moved": "Job {id} moved.",
    "not-waiting": "Job {id} is no longer waiting: nothing changed.",
    "batch-cancelled": "Batch {id}: every waiting job cancelled.",
    "replayed": "Dead letter {id} queued again.",
    "not-replayed": "Dead letter {id} was not there any more.",
    "unknown": "No such job or batch: {id}.",
    "schedule-paused": "Schedule {id} paused: its ticks pass without a batch.",
    "schedule-resumed": "Schedule {id} resumed.",
    "schedule-run": "Schedule {id}: one tick run now.",
}
_ID = re.compile(r"[A-Za-z0-9:_.-]{1,80}")
_NAME = re.compile(r"[A-Za-z0-9_-]{0,64}")
#: No frames, no scripts, no asset from elsewhere; forms post only here.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _bridge(request: Request) -> BridgeClient:
    return cast(BridgeClient, request.app.state.bridge)


def _schedules(request: Request) -> ScheduleRunner:
    runner = cast(ScheduleRunner, request.app.state.schedules)
    runner.sync()
    return runner


def _keys(request: Request) -> Keys:
    return cast(Keys, request.app.state.keys)


def _page(request: Request, name: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, context, status_code=status, headers=HEADERS)
    return cast(HTMLResponse, response)


def _refresh(request: Request) -> int:
    raw = request.query_params.get("refresh", "5")
    return min(300, max(1, int(raw))) if raw.isdigit() else 5


def _query_name(request: Request, name: str) -> str:
    """An account name (or the start of one) from the query; anything else is ignored."""
    value = request.query_params.get(name, "")
    return value if _NAME.fullmatch(value) else ""


def _note(request: Request) -> str | None:
    template, ident = NOTES.get(request.query_params.get("note", "")), request.query_params.get("id", "")
    if template is None or not _ID.fullmatch(ident):
        return None
    return template.format(id=ident)


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request, viewer: ViewerDep) -> HTMLResponse:
    """The dashboard of the key's accounts; it reloads itself every ``?refresh=`` seconds (default 5)."""
    board = gather(_bridge(request), _keys(request), viewer)
    context = {"board": board, "csrf": viewer.csrf, "refresh": _refresh(request), "note": _note(request)}
    context |= {
        "schedules": schedule_views(_schedules(request), _bridge(request), viewer),
        "admin": viewer.caller.admin,
        "runtime_accounts": accounts_table(
            _bridge(request).redis,
            _keys(request),
            viewer,
            cursor=_query_name(request, "accounts_after"),
            prefix=_query_name(request, "accounts_filter"),
        ),
    }
    return _page(request, "dashboard.html", context | {"priorities": PRIORITIES})


def _visible(request: Request, viewer: Viewer, job_id: str) -> JobStatus:
    try:
        status = _bridge(request).get(job_id)
    except JobNotFound:
        status = None
    if status is None or not viewer.caller.may_use(status.account):
        raise ProblemError(404, "no operation with this id (unknown, or past its retention)")
    return status


@router.get("/operations/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, viewer: ViewerDep) -> HTMLResponse:
    """One job's status (the JSON of ``GET /v1/operations/{id}``), with its buttons while it waits."""
    status = _visible(request, viewer, job_id)
    context = {"job": status, "json": status.model_dump_json(indent=2), "csrf": viewer.csrf, "priorities": PRIORITIES}
    return _page(request, "job.html", context)


async def _form(request: Request, viewer: Viewer) -> dict[str, str]:
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    check_post(request, viewer, form)
    return form


def _back(note: str, ident: str, form: dict[str, str]) -> Response:
    """303 to the dashboard with the note, keeping the page's refresh period."""
    query = {"note": note, "id": ident} | ({"refresh": form["refresh"]} if form.get("refresh", "").isdigit() else {})
    return RedirectResponse(f"/ui?{urlencode(query)}", status_code=303)


@router.post("/operations/{job_id}/cancel")
async def cancel_job(request: Request, job_id: str, viewer: ViewerDep) -> Response:
    """Cancel a waiting job."""
    form = await _form(request, viewer)
    _visible(request, viewer, job_id)
    try:
        _bridge(request).cancel(job_id)
    except NotWaiting:
        return _back("not-waiting", job_id, form)
    except JobNotFound:
        return _back("unknown", job_id, form)
    return _back("cancelled", job_id, form)


@router.post("/operations/{job_id}/priority")
async def move_job(request: Request, job_id: str, viewer: ViewerDep) -> Response:
    """Move a waiting job to the lane the form names."""
    form = await _form(request, viewer)
    priority = form.get("priority", "")
    if priority not in PRIORITIES:
        raise ProblemError(422, f"priority: expected one of {', '.join(PRIORITIES)}")
    _visible(request, viewer, job_id)
    try:
        _bridge(request).reprioritize(job_id, priority)  # type: ignore[arg-type]  # checked against PRIORITIES
    except NotWaiting:
        return _back("not-waiting", job_id, form)
    except JobNotFound:
        return _back("unknown", job_id, form)
    return _back("moved", job_id, form)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str, viewer: ViewerDep) -> Response:
    """Cancel every waiting job of a batch."""
    form = await _form(request, viewer)
    bridge = _bridge(request)
    try:
        if not viewer.sees(bridge.batch_accounts(batch_id)):
            raise BatchNotFound(batch_id)
        bridge.cancel_batch(batch_id)
    except BatchNotFound:
        raise ProblemError(404, "no batch with this id (unknown, or past its retention)") from None
    return _back("batch-cancelled", batch_id, form)


@router.post("/dead-letters/replay")
async def replay(request: Request, viewer: ViewerDep) -> Response:
    """Queue a dead-lettered callback again (its job or batch must be the viewer's)."""
    form = await _form(request, viewer)
    subject = form.get("subject", "")
    bridge = _bridge(request)
    try:
        if subject.startswith(BATCH):
            owners = bridge.batch_accounts(subject.removeprefix(BATCH))
        else:
            owners = [bridge.get(subject).account]
    except JobNotFound:  # BatchNotFound too; an expired subject: only a key of every account may replay it
        owners = []
    if not (viewer.sees(owners) or (viewer.caller.accounts is None and subject)):
        raise ProblemError(404, "no dead letter with this id")
    deliveries = DeliveryStore(bridge.redis, _keys(request), watch_s=bridge.settings.redelivery_timeout_s)
    replayed = deliveries.replay([subject])
    return _back("replayed" if replayed else "not-replayed", subject, form)


@router.post("/schedules/{name}/{action}")
async def steer_schedule(request: Request, name: str, action: str, viewer: ViewerDep) -> Response:
    """Pause, resume or run a schedule now (an admin key, as on the API)."""
    form = await _form(request, viewer)
    if action not in ("pause", "resume", "run"):
        raise ProblemError(404, "no such action: pause, resume or run")
    if not viewer.caller.admin:
        raise ProblemError(403, "this needs an admin key (admin = true in [api_keys.NAME], or BRIDGE_ADMIN_KEYS)")
    runner = _schedules(request)
    defined = runner.store.get(name)
    if defined is None or not viewer.caller.may_use(defined.schedule.account):
        raise ProblemError(404, "no schedule with this name")
    if action == "run":
        runner.run_now(name)
        return _back("schedule-run", name, form)
    runner.store.set_paused(name, action == "pause")
    return _back("schedule-paused" if action == "pause" else "schedule-resumed", name, form)
