"""The service's error helpers, written once: the 404 of a missing resource, a JSON error sent
straight from ASGI middleware (which runs before FastAPI's exception handlers), and the client input
a 422 echoes made encodable."""

from __future__ import annotations

import json
import math
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


def json_safe(value: Any) -> Any:
    """value with what strict JSON cannot carry spelt out: NaN and Infinity (which Python's JSON reader
    accepts in a body) as the strings "NaN", "Infinity", "-Infinity", and bytes (a body that was not
    JSON) decoded with invalid UTF-8 replaced. Dicts, lists and tuples are walked; the rest is kept."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


Responses = dict[int | str, dict[str, Any]]  # the `responses=` of a route, as FastAPI types it
