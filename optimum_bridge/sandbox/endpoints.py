"""The simulated Optimum API endpoints (vehicles, assignments, persons, trips).

``dispatch`` runs after the sandbox pipeline has authenticated the call and
charged it to the quota; it only answers from the generated fleet. Paths match
case-insensitively, as on the real (ASP.NET) API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from optimum_bridge.sandbox.fleet import DATE_FORMAT
from optimum_bridge.sandbox.state import SandboxState

Handler = Callable[[Request, SandboxState, dict[str, str]], Awaitable[Response]]

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
MAX_TRIP_WINDOW = timedelta(hours=24)


def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    """A JSON error body ``{"error": code, "message": ..., **extra}``."""
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def _listing(state: SandboxState, items: list[dict[str, Any]]) -> JSONResponse:
    if state.config.wrap_lists:
        return JSONResponse({"items": items})
    return JSONResponse(items)


def _unknown_vehicle(plate: str) -> JSONResponse:
    return error(404, "not_found", f"vehicle {plate} not found", registrationNumber=plate)


async def list_vehicles(request: Request, state: SandboxState, params: dict[str, str]) -> Response:
    """``GET /Vehicles``."""
    return _listing(state, [v.to_json() for v in state.fleet.vehicles])


async def get_vehicle(request: Request, state: SandboxState, params: dict[str, str]) -> Response:
    """``GET /Vehicles/{registrationNumber}``."""
    vehicle = state.fleet.vehicle(params["plate"])
    if vehicle is None:
        return _unknown_vehicle(params["plate"])
    return JSONResponse(vehicle.to_json())


async def current_assignment(request: Request, state: SandboxState, params: dict[str, str]) -> Response:
    """``GET /VehicleAssignments/current?registrationNumber=...``."""
    plate = request.query_params.get("registrationNumber")
    if not plate:
        return _missing("registrationNumber")
    vehicle = state.fleet.vehicle(plate)
    if vehicle is None:
        return _unknown_vehicle(plate)
    return JSONResponse(vehicle.assignment())


async def list_persons(request: Request, state: SandboxState, params: dict[str, str]) -> Response:
    """``GET /Persons``."""
    return _listing(state, [p.to_json() for p in state.fleet.persons])


async def create_person(request: Request, state: SandboxState, params: dict[str, str]) -> Response:
    """``POST /Persons``: needs firstName and lastName; not idempotent."""
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error(400, "invalid_request", "the body must be a JSON object")
    if not isinstance(body, dict):
        return error(400, "invalid_request", "the body must be a JSON object")
    for name in ("firstName", "lastName"):
        value = body.get(name)
        if not isinstance(value, str) or not value.strip():
            return error(400, "invalid_request", f"{name} is required", field=name)
    email = body.get("email")
    person = state.fleet.add_person(
        body["firstName"].strip(),
        body["lastName"].strip(),
        email=email if isinstance(email, str) and email else None,
        is_driver=bool(body.get("isDriver", False)),
    )
    return JSONResponse(person.to_json(), status_code=201)


async def list_trips(request: Request, state: SandboxState, params: dict[str, str]) -> Response:
    """``GET /Geolocation/Trips``: a window of at most 24 h, optional plate filter."""
    window = _trip_window(request.query_params.get("startDate"), request.query_params.get("endDate"))
    if isinstance(window, Response):
        return window
    start, end = window
    plate = request.query_params.get("registrationNumber")
    if not plate:
        return _listing(state, state.fleet.all_trips(start, end))
    try:
        return _listing(state, state.fleet.trips(plate, start, end))
    except KeyError:
        return _unknown_vehicle(plate)


def _trip_window(start_text: str | None, end_text: str | None) -> tuple[datetime, datetime] | Response:
    bounds: list[datetime] = []
    for name, text in (("startDate", start_text), ("endDate", end_text)):
        if not text:
            return _missing(name)
        parsed = _parse_date(text)
        if parsed is None:
            message = f"{name} must be formatted YYYY-MM-DDTHH:MM:SS (no milliseconds, no timezone)"
            return error(400, "invalid_date", message, field=name)
        bounds.append(parsed)
    start, end = bounds
    if end <= start:
        return error(400, "invalid_window", "endDate must be after startDate")
    if end - start > MAX_TRIP_WINDOW:
        return error(
            400,
            "invalid_window",
            "the window from startDate to endDate must not exceed 24 hours",
        )
    return start, end


def _parse_date(text: str) -> datetime | None:
    if not _DATE_RE.match(text):
        return None
    try:
        return datetime.strptime(text, DATE_FORMAT)
    except ValueError:
        return None


def _missing(name: str) -> JSONResponse:
    return error(400, "invalid_request", f"the query parameter {name} is required", field=name)


ROUTES: tuple[tuple[str, re.Pattern[str], Handler], ...] = (
    ("GET", re.compile(r"^/vehicles/?$", re.IGNORECASE), list_vehicles),
    ("GET", re.compile(r"^/vehicles/(?P<plate>[^/]+)$", re.IGNORECASE), get_vehicle),
    (
        "GET",
        re.compile(r"^/vehicleassignments/current/?$", re.IGNORECASE),
        current_assignment,
    ),
    ("GET", re.compile(r"^/persons/?$", re.IGNORECASE), list_persons),
    ("POST", re.compile(r"^/persons/?$", re.IGNORECASE), create_person),
    ("GET", re.compile(r"^/geolocation/trips/?$", re.IGNORECASE), list_trips),
)


_PLATE = {"name": "registrationNumber", "in": "query", "schema": {"type": "string"}}
_DATE = {"type": "string", "format": "date-time"}

#: What the OpenAPI document (``sandbox.document``) says of each route, beside ``ROUTES``: its path
#: template, query parameters and JSON body. A route without an entry here fails the document's build.
ROUTE_DOCS: dict[Handler, dict[str, Any]] = {
    list_vehicles: {"path": "/Vehicles", "summary": "The fleet"},
    get_vehicle: {
        "path": "/Vehicles/{registrationNumber}",
        "summary": "One vehicle",
        "path_parameters": ["registrationNumber"],
    },
    current_assignment: {
        "path": "/VehicleAssignments/current",
        "summary": "Who drives the vehicle now",
        "query": [{**_PLATE, "required": True}],
    },
    list_persons: {"path": "/Persons", "summary": "Drivers and other persons"},
    create_person: {
        "path": "/Persons",
        "summary": "Create a person",
        "body": {
            "type": "object",
            "required": ["firstName", "lastName"],
            "properties": {
                "firstName": {"type": "string", "minLength": 1},
                "lastName": {"type": "string", "minLength": 1},
                "email": {"type": ["string", "null"]},
                "isDriver": {"type": "boolean"},
            },
        },
    },
    list_trips: {
        "path": "/Geolocation/Trips",
        "summary": "GPS trips in a window of at most 24 hours",
        "query": [
            {"name": "startDate", "in": "query", "required": True, "schema": _DATE},
            {"name": "endDate", "in": "query", "required": True, "schema": _DATE},
            _PLATE,
        ],
    },
}


async def dispatch(request: Request, state: SandboxState) -> Response:
    """Answer an authenticated API call: 404 for unknown paths, 405 for wrong methods."""
    path, method = request.url.path, request.method.upper()
    allowed: list[str] = []
    for route_method, pattern, handler in ROUTES:
        match = pattern.match(path)
        if match is None:
            continue
        if route_method == method or (method == "HEAD" and route_method == "GET"):
            return await handler(request, state, match.groupdict())
        allowed.append(route_method)
    if allowed:
        response = error(405, "method_not_allowed", f"{method} is not allowed on {path}")
        response.headers["Allow"] = ", ".join(sorted(set(allowed)))
        return response
    return error(404, "not_found", f"no endpoint at {path}")
