"""The dashboard's session: a signed cookie and the CSRF token derived from it. Nothing is stored
server side, so any number of API processes agree, and changing TRANSFERLAB_API_TOKEN ends every
session.

    cookie = new_session(token)                 # after the login form took the right token
    csrf = csrf_token(cookie, token)            # into every state-changing form, and X-CSRF-Token
    session_id(cookie, token)                   # None unless signed with this token and not expired

The cookie is HttpOnly (scripts cannot read it) and SameSite=Strict (no other site's page sends it).
With the token set, /ui pages accept it instead of the bearer header; the JSON API accepts it only
together with the matching X-CSRF-Token header (service/auth.py). With no token set the cookie only
carries the CSRF pairing (a double-submit token). Logging out deletes the cookie in the browser; a
copied cookie stays valid until it expires (SESSION_SECONDS) or the token changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import quote

from starlette.types import Scope, Send

COOKIE = "transferlab_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600
UI_PREFIX = "/ui"
# Open without a session: the login form, the dashboard's own static files, the offline docs' assets.
OPEN_PREFIXES = ("/ui/static/", "/docs/assets/")
OPEN_UI_PATHS = frozenset({"/ui/login", "/"})  # "/" only redirects to /ui


def _key(token: str | None) -> bytes:
    return hashlib.sha256(b"transferlab-ui-session\0" + (token or "").encode()).digest()


def _sign(token: str | None, message: str) -> str:
    return hmac.new(_key(token), message.encode(), hashlib.sha256).hexdigest()


def new_session(token: str | None, now: float | None = None) -> str:
    """A fresh cookie value: `<random id>.<expiry>.<signature>`."""
    expires = int(now if now is not None else time.time()) + SESSION_SECONDS
    payload = f"{secrets.token_urlsafe(18)}.{expires}"
    return f"{payload}.{_sign(token, payload)}"


def session_id(cookie: str | None, token: str | None, now: float | None = None) -> str | None:
    """The session's id when the cookie is signed for this token and has not expired, else None."""
    if not cookie or cookie.count(".") != 2:
        return None
    sid, expires, signature = cookie.split(".")
    if not hmac.compare_digest(signature, _sign(token, f"{sid}.{expires}")):
        return None
    if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
        return None
    return sid


def csrf_token(cookie: str, token: str | None) -> str:
    return _sign(token, f"csrf:{cookie.split('.')[0]}")[:40]


def csrf_matches(cookie: str | None, token: str | None, given: str | None) -> bool:
    if not given or session_id(cookie, token) is None:
        return False
    assert cookie is not None  # a valid session has one
    return hmac.compare_digest(given.encode(), csrf_token(cookie, token).encode())


def set_cookie_header(value: str, secure: bool) -> str:
    return f"{COOKIE}={value}; Path=/; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict" + (
        "; Secure" if secure else ""
    )


def clear_cookie_header(secure: bool) -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def cookie_from_header(header: str | None) -> str | None:
    """Our cookie's value from a Cookie header."""
    for part in (header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def is_open_path(path: str) -> bool:
    return path in OPEN_UI_PATHS or path.startswith(OPEN_PREFIXES)


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard path only (never another host)."""
    if target and is_ui_path(target.split("?")[0]) and not target.startswith("//"):
        return target
    return UI_PREFIX


def login_location(root_path: str, path: str, query: str) -> str:
    target = path + (f"?{query}" if query else "")
    return f"{root_path}{UI_PREFIX}/login?next={quote(target, safe='')}"


# ---------------------------------------------------------------- for service/auth.py's middleware


def _header(scope: Scope, name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), None)


def authorize_with_cookie(scope: Scope, path: str, token: str) -> Scope | None:
    """The request as the app should see it when the session cookie lets it in, else None. Dashboard
    paths take the cookie alone (GETs change nothing; their POSTs check the CSRF token). The JSON API
    takes it only with this session's X-CSRF-Token header, and then sees the bearer token, so the
    routers' own token check agrees."""
    cookie = cookie_from_header(_header(scope, b"cookie"))
    if session_id(cookie, token) is None:
        return None
    if is_ui_path(path):
        return scope
    if not csrf_matches(cookie, token, _header(scope, CSRF_HEADER.encode())):
        return None
    headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
    return {**scope, "headers": [*headers, (b"authorization", f"Bearer {token}".encode())]}


async def send_login_redirect(scope: Scope, send: Send, path: str) -> bool:
    """For a dashboard page asked for without a session: send the browser to the login form (htmx gets
    a 401 with HX-Redirect, which it follows). False for anything else: it gets the API's 401."""
    if not is_ui_path(path) or scope.get("method") not in ("GET", "HEAD"):
        return False
    location = login_location(
        scope.get("root_path", ""), path, scope.get("query_string", b"").decode("latin-1")
    )
    if _header(scope, b"hx-request") == "true":
        status, body, extra = (
            401,
            json.dumps({"detail": "log in again"}).encode(),
            [(b"hx-redirect", location)],
        )
    else:
        status, body, extra = 303, b"", [(b"location", location)]
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k, v.encode("latin-1")) for k, v in extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return True
