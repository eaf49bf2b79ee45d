"""The OpenAPI document says what the server does, also where FastAPI cannot see it from a route:
the 400 of a body that does not parse, the token (401, and Bearer optional while none is set), the
413 of the body limit (service/body_limit.py), and the 503 of a database that is down.

    install_openapi(app, token=lambda: get_settings().api_token)   # in create_app, after the routers
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from service.errors import Responses
from service.schemas import ErrorPublic

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}

DATABASE_UNAVAILABLE: Responses = {
    503: {"model": ErrorPublic, "description": "The database is unavailable; retry later."}
}
"""For include_router: every route of these routers reads the database."""

UNPARSABLE_BODY = {
    "description": "The body could not be parsed: not JSON, not UTF-8, or broken multipart/form-data.",
    "content": _ERROR,
}
UNAUTHORIZED = {
    "description": "TRANSFERLAB_API_TOKEN is set and the request lacks `Authorization: Bearer <token>` "
    "or has another token.",
    "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    "content": _ERROR,
}
TOO_LARGE = {"description": "The request body is over the size limit.", "content": _ERROR}
_WITH_BODY = {"post", "put", "patch", "delete"}  # the methods whose bodies the body limit counts


def document(schema: dict[str, Any], *, token_set: bool) -> dict[str, Any]:
    """Add to each operation the answers no route declares (a route's own description wins)."""
    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "ErrorPublic", ErrorPublic.model_json_schema()
    )
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("400", copy.deepcopy(UNPARSABLE_BODY))
            if method in _WITH_BODY:
                responses.setdefault("413", copy.deepcopy(TOO_LARGE))
            if operation.get("security"):
                responses.setdefault("401", copy.deepcopy(UNAUTHORIZED))
                if not token_set:  # the API is open: `{}` is the alternative of sending nothing
                    operation["security"] = [{}, *operation["security"]]
    return schema


def install_openapi(app: FastAPI, token: Callable[[], str | None]) -> None:
    """Serve FastAPI's document completed by `document`, for the token setting of the moment (read per
    request, like the token middleware); each variant is built once per version of the routes."""
    generate = app.openapi
    built: dict[bool, tuple[dict[str, Any], dict[str, Any]]] = {}

    def openapi() -> dict[str, Any]:
        base, token_set = generate(), bool(token())
        if token_set not in built or built[token_set][0] is not base:
            built[token_set] = (base, document(copy.deepcopy(base), token_set=token_set))
        return built[token_set][1]

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it
