"""Operations checked against the API's own OpenAPI document (spec §13), with openapi-core.

``OperationChecker`` wraps one document and answers, for an ``Operation``, None
or one line naming the field (``path: GET /Vehicle is not in the API (did you
mean /Vehicles?)``). It is no stricter than the API: paths match
case-insensitively (ASP.NET routes do) and ``format: date-time`` accepts
``2026-11-26T00:00:00`` without an offset (ASP.NET binds it; Swashbuckle
documents every ``DateTime`` so). ``fetch_document`` is how a worker
gets it; ``documents.DocumentStore`` keeps it in Redis for producers.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.validation.request.exceptions import (
    InvalidParameter,
    InvalidRequestBody,
    MissingRequestBodyError,
    MissingRequiredParameter,
)

from optimum_bridge.schemas import Operation
from optimum_bridge.upstream.tokens import TokenStore

log = logging.getLogger(__name__)

_HOST = "http://api.invalid"  # openapi-core matches a server; the document's own servers are not ours to trust
_OFFSETLESS = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")


def _date_time(value: object) -> bool:
    """RFC 3339 date-time, the offset optional (as ASP.NET binds a ``DateTime``)."""
    if not isinstance(value, str) or not _OFFSETLESS.match(value):
        return not isinstance(value, str)
    try:
        datetime.fromisoformat(value.replace("z", "Z").replace(" ", "T"))
    except ValueError:
        return False
    return True


class _Values(dict[str, str]):
    """One value per name, with the ``getlist`` openapi-core reads query and headers through."""

    def getlist(self, name: str) -> list[str]:
        return [self[name]] if name in self else []


@dataclass
class _Request:
    """An ``Operation`` as openapi-core's request protocol."""

    method: str
    path: str
    parameters: RequestParameters
    body: bytes | None
    content_type: str = "application/json"
    host_url: str = _HOST


class OperationChecker:
    """One OpenAPI document, and the check of an operation against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        document = {**document, "servers": [{"url": _HOST}]}
        config = Config(extra_format_validators={"date-time": _date_time})
        spec: dict[Hashable, Any] = dict(document.items())
        self._openapi = OpenAPI.from_dict(spec, config=config)
        self._paths: dict[str, set[str]] = {
            path: {m.upper() for m in item if m in {"get", "put", "post", "delete", "patch", "head", "options"}}
            for path, item in document.get("paths", {}).items()
        }
        self._patterns = [(path, _pattern(path)) for path in self._paths]

    def check(self, operation: Operation) -> str | None:
        """None if the document allows the operation, else one line naming the field."""
        path = self._document_path(operation.path, operation.method)
        if path is None:
            return self._unknown(operation)
        query = {name: _text(value) for name, value in operation.query.items()}
        body = None if operation.body is None else json.dumps(operation.body).encode()
        request = _Request(
            method=operation.method.lower(),
            path=path,
            parameters=RequestParameters(
                query=_Values(query),
                header=_Values({"Authorization": "Bearer checked"}),
                cookie=_Values(),
            ),
            body=body,
        )
        try:
            self._openapi.validate_request(request)
        except (PathNotFound, OperationNotFound):
            return self._unknown(operation)
        except Exception as exc:
            return _describe(exc)
        return None

    def _document_path(self, path: str, method: str) -> str | None:
        """The path in the document's casing of the template it matches, one with ``method`` first (None: none)."""
        matches = [(template, match) for template, pattern in self._patterns if (match := pattern.match(path))]
        matches.sort(key=lambda found: method not in self._paths[found[0]])
        if not matches:
            return None
        template, match = matches[0]
        return _fill(template, iter(match.groups()))

    def _unknown(self, operation: Operation) -> str:
        method, path = operation.method, operation.path
        if self._document_path(path, method) is not None:
            allowed = ", ".join(sorted(self._paths[_template_of(self._patterns, path)]))
            return f"method: {method} {path} is not in the API (allowed: {allowed})"
        known = [p for p, methods in self._paths.items() if method in methods] or list(self._paths)
        lowered = {p.lower(): p for p in known}
        near = difflib.get_close_matches(path.lower(), list(lowered), n=1, cutoff=0.5)
        hint = f" (did you mean {lowered[near[0]]}?)" if near else ""
        return f"path: {method} {path} is not in the API{hint}"


def _fill(template: str, values: Iterator[str]) -> str:
    """The template with each ``{name}`` replaced by the next value."""
    return re.sub(r"\{[^}/]+\}", lambda _m: next(values), template)


def _template_of(patterns: list[tuple[str, re.Pattern[str]]], path: str) -> str:
    return next(template for template, pattern in patterns if pattern.match(path))


def _pattern(template: str) -> re.Pattern[str]:
    """A template as a case-insensitive regex; each ``{name}`` is one segment."""
    pieces = re.split(r"(\{[^}/]+\})", template.rstrip("/"))
    regex = "".join("([^/]+)" if p.startswith("{") else re.escape(p) for p in pieces)
    return re.compile(f"^{regex}/?$", re.IGNORECASE)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _describe(exc: Exception) -> str:
    """openapi-core's error as one line naming the field."""
    if isinstance(exc, MissingRequiredParameter):
        return f"query.{exc.name}: required by the API"
    if isinstance(exc, InvalidParameter):
        return f"query.{exc.name}: {_cause(exc)}"
    if isinstance(exc, MissingRequestBodyError):
        return "body: required by the API"
    if isinstance(exc, InvalidRequestBody):
        return f"body{_cause(exc, body=True)}"
    return f"operation: {type(exc).__name__}: {exc}"


def _cause(exc: BaseException, *, body: bool = False) -> str:
    cause = exc.__cause__
    errors = getattr(cause, "schema_errors", None)
    if errors:
        first = errors[0]
        where = "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in first.absolute_path)
        message = first.message
        return f"{where}: {message}" if body else f"{message}"
    text = str(cause or exc)
    return f": {text}" if body else text


def fetch_document(http: httpx.Client, url: str, *, api_url: str, tokens: TokenStore | None) -> dict[str, Any]:
    """GET the document; the account's token goes to the API's own scheme and host only (a 401 there gets one)."""
    document_at, api_at = urlsplit(url), urlsplit(api_url)
    same_host = (document_at.scheme, document_at.netloc.lower()) == (api_at.scheme, api_at.netloc.lower())
    token = tokens.cached() if tokens is not None and same_host else None
    answer = http.get(url, headers={"Authorization": f"Bearer {token.value.get_secret_value()}"} if token else {})
    if answer.status_code == 401 and tokens is not None and same_host:
        answer = http.get(url, headers={"Authorization": f"Bearer {tokens.get().value.get_secret_value()}"})
    answer.raise_for_status()
    document = answer.json()
    if not isinstance(document, dict) or "paths" not in document:
        raise ValueError(f"{url} is not an OpenAPI document")
    try:
        OperationChecker(document)
    except Exception as exc:  # openapi-core's spec validation: the document is not one it can check with
        raise ValueError(f"{url}: not a valid OpenAPI document ({exc})") from exc
    return document
