"""The Optimum API simulator as an ASGI app (``create_app``).

One HTTP server plays both the identity server (``POST /connect/token``) and the
API. Every API call goes through the same pipeline, in this order: bearer token
(401) → per-client sliding-window quota (429) → scripted faults → random errors →
latency → the endpoint (``sandbox.endpoints``); every answer past the token check
states the client's quota in headers when ``rate_limit_headers`` asks (``ietf`` or ``x``;
429s included). Admin endpoints under ``/_sandbox/``
(no auth) let tests in other processes change knobs, script faults and read stats.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, unquote

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from optimum_bridge.clock import Clock
from optimum_bridge.sandbox.config import FaultResponse, FaultSpec, HeaderStyle, SandboxConfig, validation_message
from optimum_bridge.sandbox.document import DOCUMENT_PATH, build_document
from optimum_bridge.sandbox.endpoints import dispatch, error
from optimum_bridge.sandbox.state import QuotaDecision, SandboxState

log = logging.getLogger(__name__)

API_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
_NO_BODY_STATUSES = frozenset({204, 304})
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})
_PADDING_HEAD, _PADDING_TAIL = b'{"padding": "', b'"}'
_PADDING_CHUNK = 1024 * 1024


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


# -- identity server ------------------------------------------------------------


async def token_endpoint(request: Request) -> Response:
    """``POST /connect/token`` (client_credentials, form or HTTP Basic credentials)."""
    state = _state(request)
    if request.method != "POST":
        state.count_token_request(failed=True)
        return JSONResponse({"error": "invalid_request"}, status_code=405)
    form = await _form(request)
    client_id, secret = _credentials(request, form)
    grant_type = form.get("grant_type")
    failure = _token_failure(state.config, client_id, secret, grant_type)
    state.count_token_request(failed=failure is not None, client_id=client_id if failure is None else None)
    if failure is not None or client_id is None:
        log.warning("token request refused (client_id=%s): %s", client_id, failure)
        return JSONResponse({"error": failure or "invalid_request"}, status_code=400)
    token, lifetime = state.issue_token(client_id)
    log.info("token issued (client_id=%s, expires_in=%s)", client_id, lifetime)
    body = {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _form(request: Request) -> dict[str, str]:
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return {}
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {key: values[0] for key, values in parsed.items()}


def _credentials(request: Request, form: dict[str, str]) -> tuple[str | None, str | None]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        client_id, _, secret = decoded.partition(":")
        return unquote(client_id), unquote(secret)
    return form.get("client_id"), form.get("client_secret")


def _token_failure(
    config: SandboxConfig,
    client_id: str | None,
    secret: str | None,
    grant_type: str | None,
) -> str | None:
    if not client_id or secret is None or not grant_type:
        return "invalid_request"
    expected = config.clients.get(client_id)
    if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
        return "invalid_client"
    if grant_type != "client_credentials":
        return "unsupported_grant_type"
    return None


# -- API pipeline -------------------------------------------------------------------


async def api_endpoint(request: Request) -> Response:
    """Every API path: log the call, run the pipeline, record the status sent."""
    state = _state(request)
    arrival = state.clock.monotonic()
    entry = state.begin_call(request.method, request.url.path, arrival)
    status = 500
    try:
        response = await _pipeline(request, state, entry, arrival)
        status = response.status_code
        return response
    except asyncio.CancelledError:
        status = 499  # the client went away before the answer
        raise
    finally:
        state.end_call(entry, status)


async def _pipeline(request: Request, state: SandboxState, entry: dict[str, Any], arrival: float) -> Response:
    client_id = state.client_for(_bearer(request))
    if client_id is None:
        return JSONResponse({"error": "invalid_token"}, status_code=401, headers=_UNAUTHORIZED_HEADERS)
    decision = state.admit(client_id, arrival)
    response = await _admitted(request, state, entry, client_id, decision)
    response.headers.update(rate_limit_headers(state.config.header_style(client_id), decision))
    return response


def rate_limit_headers(style: HeaderStyle, decision: QuotaDecision) -> dict[str, str]:
    """The quota as an answer states it, in ``style`` (nothing for ``none`` or an unlimited client)."""
    if style == "none" or not decision.limit:
        return {}
    limit, remaining, reset = decision.limit, decision.remaining, decision.reset_s
    if style == "ietf":
        return {
            "RateLimit-Policy": f'"default";q={limit};w={decision.window_s:g}',
            "RateLimit": f'"default";r={remaining};t={reset}',
        }
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": str(reset)}


async def _admitted(
    request: Request, state: SandboxState, entry: dict[str, Any], client_id: str, decision: QuotaDecision
) -> Response:
    if not decision.accepted:
        state.mark_quota_rejected(entry, client_id)
        return _too_many_requests(state, decision.retry_after_s)
    state.mark_accepted(entry, client_id)
    fault = state.take_fault(request.method, request.url.path)
    if fault is not None:
        return await _scripted(fault)
    config = state.config
    if config.error_rate > 0 and state.rng.random() < config.error_rate:
        return error(config.error_status, "simulated_error", "random failure (error_rate)")
    delay_ms = config.latency_ms
    if config.latency_jitter_ms > 0:
        delay_ms += state.rng.uniform(0, config.latency_jitter_ms)
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    return await dispatch(request, state)


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _too_many_requests(state: SandboxState, retry_after_s: int) -> Response:
    headers = {"Retry-After": str(retry_after_s)} if state.config.retry_after else {}
    message = f"quota {state.config.quota} exceeded"
    body = {"error": "too_many_requests", "message": message}
    return JSONResponse(body, status_code=429, headers=headers)


async def _scripted(fault: FaultResponse) -> Response:
    if fault.delay_ms > 0:
        await asyncio.sleep(fault.delay_ms / 1000)
    headers = {k: v for k, v in fault.headers.items() if k.lower() not in _HOP_HEADERS}
    if fault.status in _NO_BODY_STATUSES:
        return Response(status_code=fault.status, headers=headers)
    if fault.padded_to_bytes is not None:
        # Chunked, without a content-length: the reader learns the size only by reading.
        headers |= {"content-type": "application/json"}
        return StreamingResponse(_padding(fault.padded_to_bytes), status_code=fault.status, headers=headers)
    return JSONResponse(fault.json_body(), status_code=fault.status, headers=headers)


async def _padding(size: int) -> AsyncIterator[bytes]:
    """A JSON object of exactly ``size`` bytes, one chunk at a time."""
    yield _PADDING_HEAD
    left = size - len(_PADDING_HEAD) - len(_PADDING_TAIL)
    chunk = b"x" * _PADDING_CHUNK
    while left > 0:
        yield chunk[:left]
        left -= min(left, _PADDING_CHUNK)
    yield _PADDING_TAIL


# -- admin ---------------------------------------------------------------------------


async def _json_object(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error(422, "invalid_body", "body: must be a JSON object")
    if not isinstance(body, dict):
        return error(422, "invalid_body", "body: must be a JSON object")
    return body


async def admin_config(request: Request) -> Response:
    """``GET`` the knobs (secrets masked) or ``POST`` a partial update."""
    state = _state(request)
    if request.method == "POST":
        patch = await _json_object(request)
        if isinstance(patch, Response):
            return patch
        try:
            state.configure(patch)
        except ValidationError as exc:
            return error(422, "invalid_config", validation_message(exc))
    return JSONResponse(state.config.public())


async def admin_stats(request: Request) -> Response:
    """``GET`` counters, ``max_in_window`` and the call log."""
    return JSONResponse(_state(request).stats())


async def admin_faults(request: Request) -> Response:
    """``POST`` queues scripted answers; ``GET`` lists the pending ones."""
    state = _state(request)
    if request.method == "GET":
        return JSONResponse(state.faults())
    body = await _json_object(request)
    if isinstance(body, Response):
        return body
    try:
        spec = FaultSpec.model_validate(body)
    except ValidationError as exc:
        return error(422, "invalid_fault", validation_message(exc))
    return JSONResponse({"pending": state.add_faults(spec)})


async def admin_revoke(request: Request) -> Response:
    """``POST``: every token issued so far now gets 401."""
    return JSONResponse({"revoked": _state(request).revoke_all()})


async def admin_reset(request: Request) -> Response:
    """``POST``: clear counters, log, faults, tokens (knobs unchanged)."""
    _state(request).reset()
    return JSONResponse({"reset": True})


async def swagger_document(request: Request) -> Response:
    """``GET /swagger/v1/swagger.json``: the OpenAPI document, open (no token, no quota) as Swagger UI's often is."""
    return JSONResponse(build_document())


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        return error(500, "internal_error", "unexpected sandbox error")
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


def create_app(config: SandboxConfig | None = None, *, clock: Clock | None = None) -> Starlette:
    """The simulator as an ASGI app; its ``SandboxState`` is ``app.state.sandbox``."""
    admin = [
        Route("/config", admin_config, methods=["GET", "POST"]),
        Route("/stats", admin_stats, methods=["GET"]),
        Route("/faults", admin_faults, methods=["GET", "POST"]),
        Route("/revoke", admin_revoke, methods=["POST"]),
        Route("/reset", admin_reset, methods=["POST"]),
    ]
    routes = [
        Mount("/_sandbox", routes=admin),
        Route("/connect/token", token_endpoint, methods=API_METHODS),
        Route(DOCUMENT_PATH, swagger_document, methods=["GET"]),
        Route("/{path:path}", api_endpoint, methods=API_METHODS),
    ]
    handlers = {HTTPException: _http_error, Exception: _http_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.sandbox = SandboxState(config, clock=clock)
    return app
