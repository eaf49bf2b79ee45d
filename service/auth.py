"""Bearer-token check as pure ASGI middleware, so a request without the token is refused with 401
before its body is read (a dependency would run only after FastAPI had parsed a 10 MB upload).

The routers keep `require_token` as a dependency too: it documents the scheme in OpenAPI and guards
any route mounted without this middleware. Health probes and the docs stay open, also behind a
prefix (`uvicorn --root-path /api`: the scope's path is then /api/healthz, its root_path /api).

The dashboard's session cookie (service/ui/session.py) stands in for the token on /ui, and on the
JSON API together with its X-CSRF-Token header; a dashboard page without either goes to its login form.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import send_json_error
from service.ui.session import authorize_with_cookie, is_open_path, send_login_redirect

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
UNAUTHORIZED = (
    "missing or wrong API token; send 'Authorization: Bearer <token>' with the value of TRANSFERLAB_API_TOKEN"
)


def route_path(scope: Scope) -> str:
    """The path the app routes on, no trailing slash: the scope's path without its root_path prefix,
    stripped exactly where Starlette's router strips it (so both see the same route)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


def token_matches(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class TokenMiddleware:
    """token: a callable giving the current token, or None when the API is open (read per request)."""

    def __init__(
        self,
        app: ASGIApp,
        token: Callable[[], str | None],
        public_paths: Callable[[], Collection[str]] = frozenset,
    ):
        self.app = app
        self.token = token
        self.public_paths = public_paths  # opened by a setting (TRANSFERLAB_METRICS_PUBLIC: /metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self.token() if scope["type"] == "http" else None
        path = route_path(scope) if token else ""
        if (
            not token
            or path in OPEN_PATHS
            or is_open_path(path)
            or scope.get("method") == "OPTIONS"
            or path in self.public_paths()
        ):
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        if token_matches(header, token):
            await self.app(scope, receive, send)
            return
        with_session = authorize_with_cookie(scope, path, token)
        if with_session is not None:
            await self.app(with_session, receive, send)
            return
        if not await send_login_redirect(scope, send, path):
            await send_json_error(send, 401, UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
