"""The byte limit: 413 before the body is read, from Content-Length or by counting the stream."""

from __future__ import annotations

import asyncio

import pytest

from core.models import Checkpoint, Job
from service.body_limit import BodyLimitMiddleware

LIMIT = 4096


@pytest.fixture
def small_limit(env, settings):
    return env(MAX_UPLOAD_BYTES=LIMIT)


def multipart(size: int, boundary: str = "xyz") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="checkpoint"\r\n\r\nabc\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + b"\x00" * size
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_declared_content_length_over_the_limit_is_413(client, small_limit, count_rows):
    response = client.post(
        "/predict",
        files=[("files", ("big.png", b"\x00" * (LIMIT + 1), "image/png"))],
        data={"checkpoint": "abc"},
    )

    assert response.status_code == 413
    assert str(LIMIT) in response.json()["detail"]
    assert count_rows(Job) == count_rows(Checkpoint) == 0


def test_chunked_body_without_content_length_is_413(client, small_limit):
    body = multipart(LIMIT * 4)

    def chunks():  # a generator body: httpx sends it chunked, without Content-Length
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    response = client.post(
        "/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"request body is over the limit of {LIMIT} bytes; send fewer or smaller files"
    }


def test_a_body_under_the_limit_goes_through(client, small_limit):
    body = multipart(100)

    def chunks():
        yield body

    response = client.post(
        "/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )

    assert response.status_code == 404  # parsed, then: no checkpoint 'abc'


def test_json_bodies_have_their_own_small_limit(client):
    response = client.post("/jobs", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")

    assert response.status_code == 413


# ---------------------------------------------------------------- the middleware alone


def run_asgi(app, headers, chunks, path="/predict", root_path=""):
    """Drive an ASGI app with a streamed request; return (status, chunks the app pulled)."""
    pulled = []
    sent = []
    pending = list(chunks)

    async def receive():
        if not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        pulled.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "root_path": root_path, "headers": headers}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, pulled


async def read_all(scope, receive, send):
    while True:
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_middleware_stops_reading_at_the_first_chunk_over_the_limit():
    app = BodyLimitMiddleware(read_all, limits={"/predict": lambda: 1000})

    status, pulled = run_asgi(app, [], [b"x" * 400] * 10)

    assert status == 413
    assert len(pulled) == 3  # 400, 800, 1200 > 1000: stop; seven chunks never read


def test_middleware_refuses_a_declared_length_before_reading_anything():
    app = BodyLimitMiddleware(read_all, limits={"/predict": lambda: 1000})

    status, pulled = run_asgi(app, [(b"content-length", b"4000")], [b"x" * 400] * 10)

    assert status == 413
    assert pulled == []


def test_middleware_lets_a_small_body_through():
    app = BodyLimitMiddleware(read_all, limits={"/predict": lambda: 1000})

    status, pulled = run_asgi(app, [(b"content-length", b"800")], [b"x" * 400] * 2)

    assert status == 200 and len(pulled) == 2


def test_a_paths_own_limit_applies_under_a_root_path_too():
    app = BodyLimitMiddleware(read_all, limits={"/predict": lambda: 5000}, default_limit=lambda: 1000)

    status, _ = run_asgi(app, [(b"content-length", b"4000")], [b"x" * 4000], "/api/predict", "/api")

    assert status == 200  # /predict's 5000, not the default 1000
