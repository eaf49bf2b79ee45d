"""Refuse oversized request bodies with 413 before they are read into memory (pure ASGI middleware).

Two checks, because a client may not send Content-Length (chunked transfer encoding):
1. a declared Content-Length over the limit is refused before the app runs or one byte is read;
2. otherwise the body is counted as it streams in, and the read stops with 413 at the first chunk
   that crosses the limit (the multipart parser never sees it).

    limits = {"/predict": lambda: get_settings().max_upload_bytes}
    app.add_middleware(BodyLimitMiddleware, limits=limits)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import route_path
from service.errors import send_json_error

# JSON bodies (POST /jobs) are a few hundred bytes; 1 MiB is generous and stops a flood.
DEFAULT_LIMIT_BYTES = 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised from receive(); FastAPI re-raises HTTPExceptions that come out of reading the body."""

    def __init__(self, limit: int):
        super().__init__(status_code=413, detail=_message(limit))


def _message(limit: int) -> str:
    return f"request body is over the limit of {limit} bytes; send fewer or smaller files"


class BodyLimitMiddleware:
    """limits: path -> callable giving that path's byte limit (read per request: settings apply)."""

    def __init__(
        self,
        app: ASGIApp,
        limits: Mapping[str, Callable[[], int]],
        default_limit: Callable[[], int] = lambda: DEFAULT_LIMIT_BYTES,
    ):
        self.app = app
        self.limits = dict(limits)
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(route_path(scope), self.default_limit)()  # /predict under --root-path too

        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, limit)
            return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Normally FastAPI turns it into the 413 itself; this catches a read outside a route.
            if response_started:
                raise
            await _send_413(send, limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, limit: int) -> None:
    await send_json_error(send, 413, _message(limit), {"Connection": "close"})
