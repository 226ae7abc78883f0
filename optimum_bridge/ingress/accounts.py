"""Accounts over HTTP (spec §12a): ``POST``/``PATCH``/``DELETE`` with an admin key, ``GET`` with any key.

A thin layer over ``accounts.store``. A body is checked by the accounts file's
rules (a 422 naming the field, in one line, never echoing the secret); an
answer never carries a secret, only its ``secret_fingerprint``. Accounts of the
accounts file are listed with ``"source": "file"`` and answer 409 to a change.
A key limited to some accounts sees only those (another answers 404, as an
unknown one), including accounts created after the key was configured; a
limited admin key changes only those, and may create only names it lists (403).
Removing an account cancels its waiting jobs (``account_removed``, callbacks
sent) and lets calls under way finish.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from optimum_bridge.accounts.cipher import MISSING, SecretsCipher
from optimum_bridge.accounts.model import AccountPage, AccountPatch, AccountView, NewAccount
from optimum_bridge.accounts.removal import Removal
from optimum_bridge.accounts.store import DEFAULT_PAGE, MAX_PAGE, AccountConflict, AccountNotFound, AccountStore
from optimum_bridge.errors import first_problem
from optimum_bridge.ingress.auth import AdminDep, Caller, CallerDep
from optimum_bridge.ingress.http import Bridge, JsonBody, Problem, ProblemError, invalid

router = APIRouter(prefix="/v1/accounts", tags=["accounts"])
ANSWERS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (403, 404, 409, 422)}
GONE = "no account with this name"


class Removed(BaseModel):
    """What ``DELETE /v1/accounts/{name}`` did."""

    name: str
    cancelled_jobs: int


def account_store(request: Request, bridge: Bridge) -> AccountStore:
    """The ingress's store of accounts (built once)."""
    store: AccountStore | None = getattr(request.app.state, "accounts", None)
    if store is None:
        settings = bridge.settings
        cipher = SecretsCipher(settings.secrets_key)
        store = AccountStore(
            bridge.redis,
            request.app.state.keys,
            file=settings.accounts,
            cipher=cipher,
            sandbox_url=settings.sandbox_url,
        )
        request.app.state.accounts = store
    return store


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def _visible(store: AccountStore, caller: Caller, name: str) -> AccountView:
    if not caller.may_use(name):
        raise ProblemError(404, GONE)
    try:
        return store.view(name)
    except AccountNotFound:
        raise ProblemError(404, GONE) from None


def _body(name: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.get("", response_model=AccountPage)
def list_accounts(
    request: Request,
    bridge: Bridge,
    caller: CallerDep,
    cursor: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
) -> Response:
    """The accounts the key may see, by name, ``limit`` at a time after ``cursor`` (the last name of a page)."""
    store = account_store(request, bridge)
    return _json(store.page(cursor=cursor, limit=limit, only=caller.accounts))


@router.get("/{name}", response_model=AccountView, responses=ANSWERS)
def get_account(name: str, request: Request, bridge: Bridge, caller: CallerDep) -> Response:
    """One account (its secret's fingerprint, never the secret)."""
    return _json(_visible(account_store(request, bridge), caller, name))


@router.post("", status_code=201, response_model=AccountView, responses=ANSWERS, openapi_extra=_body("NewAccount"))
def create_account(payload: JsonBody, request: Request, bridge: Bridge, caller: AdminDep) -> Response:
    """Create an account (admin key): every worker serves it within 2 s."""
    store = account_store(request, bridge)
    if not store.cipher.configured:
        raise ProblemError(409, MISSING)
    try:
        new = NewAccount.model_validate(payload)
    except ValidationError as exc:
        raise invalid(first_problem(exc)) from None
    if not caller.may_use(new.name):
        raise ProblemError(403, f"this key may not use account {new.name!r}")
    try:
        return _json(store.create(new), 201)
    except AccountConflict as exc:
        raise ProblemError(409, str(exc)) from None


@router.patch("/{name}", response_model=AccountView, responses=ANSWERS, openapi_extra=_body("AccountPatch"))
def change_account(name: str, payload: JsonBody, request: Request, bridge: Bridge, caller: AdminDep) -> Response:
    """Rotate an account's secret, or change its client id, quota or OpenAPI document (admin key)."""
    store = account_store(request, bridge)
    _visible(store, caller, name)
    try:
        patch = AccountPatch.model_validate(payload)
    except ValidationError as exc:
        raise invalid(first_problem(exc)) from None
    if patch.is_empty():
        raise invalid("body: nothing to change (client_secret, client_id, rate_limit, openapi_url)")
    try:
        return _json(store.update(name, patch))
    except ValidationError as exc:  # the change checked with the account's other fields
        raise invalid(first_problem(exc)) from None
    except AccountConflict as exc:
        raise ProblemError(409, str(exc)) from None
    except AccountNotFound:
        raise ProblemError(404, GONE) from None


@router.delete("/{name}", response_model=Removed, responses=ANSWERS)
def remove_account(name: str, request: Request, bridge: Bridge, caller: AdminDep) -> Response:
    """Remove an account (admin key): its waiting jobs end ``cancelled`` (``account_removed``), calls under
    way finish, and no worker calls for it 2 s later."""
    store = account_store(request, bridge)
    _visible(store, caller, name)
    try:
        store.remove(name)
    except AccountConflict as exc:
        raise ProblemError(409, str(exc)) from None
    except AccountNotFound:
        raise ProblemError(404, GONE) from None
    removal = Removal(bridge.redis, request.app.state.keys, result_ttl_s=bridge.settings.result_ttl_s)
    return _json(Removed(name=name, cancelled_jobs=removal.cancel_waiting(name)))
