"""The service's error helpers, written once: the 404 of a missing resource, and a JSON error sent
straight from ASGI middleware (which runs before FastAPI's exception handlers)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import HTTPException, status
from sqlalchemy.orm import Session
from starlette.types import Send

Row = TypeVar("Row")


def not_found(what: str, identifier: str) -> HTTPException:
    """404 naming what was looked for: `job '1a2b' not found`."""
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{what} {identifier!r} not found")


def get_or_404(session: Session, model: type[Row], identifier: str, what: str) -> Row:
    row = session.get(model, identifier)
    if row is None:
        raise not_found(what, identifier)
    return row


async def send_json_error(
    send: Send, status_code: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """A complete `{"detail": ...}` response from raw ASGI."""
    body = json.dumps({"detail": detail}).encode()
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    start: dict[str, Any] = {"type": "http.response.start", "status": status_code, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body})


Responses = dict[int | str, dict[str, Any]]  # the `responses=` of a route, as FastAPI types it
