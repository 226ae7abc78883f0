"""The sandbox's OpenAPI 3 document, built from its routes (``endpoints.ROUTES`` and ``ROUTE_DOCS``).

Served at ``/swagger/v1/swagger.json``, the path Swashbuckle gives the real API's
document. It is built from the same table the sandbox dispatches on, so a route
cannot exist without being documented, nor be documented without existing.
"""

from __future__ import annotations

from typing import Any

from optimum_bridge.sandbox.endpoints import ROUTE_DOCS, ROUTES

DOCUMENT_PATH = "/swagger/v1/swagger.json"


def _operation(method: str, doc: dict[str, Any]) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in doc.get("path_parameters", [])
    ]
    parameters += doc.get("query", [])
    operation: dict[str, Any] = {
        "summary": doc["summary"],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {}}}}},
    }
    if method == "POST":
        operation["responses"] = {"201": {"description": "Created"}}
    if parameters:
        operation["parameters"] = parameters
    if "body" in doc:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": doc["body"]}}}
    return operation


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every sandbox route."""
    paths: dict[str, dict[str, Any]] = {}
    for method, _pattern, handler in ROUTES:
        doc = ROUTE_DOCS[handler]
        paths.setdefault(doc["path"], {})[method.lower()] = _operation(method, doc)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Optimum Automotive public API (sandbox)", "version": "v1"},
        "components": {"securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"Bearer": []}],
        "paths": paths,
    }
