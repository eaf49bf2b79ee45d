"""A light HTTP/1.1 load generator: N keep-alive connections on one asyncio loop, one pre-encoded request.

    rate = asyncio.run(closed_loop(host, port, request_bytes, connections=32, seconds=5))
    timings = asyncio.run(sequential(host, port, request_bytes, count=200))   # [(seconds, headers)]

Why not httpx in threads: on 2 shared cores, httpx's own work (about 2 ms of CPU a request, measured
with 32 threads) is taken from the server being measured. This client spends about a tenth of that,
as wrk or ab would; each connection sends its next request when the previous answer is read.
"""

from __future__ import annotations

import asyncio
import time

import httpx


def encode_request(request: httpx.Request) -> bytes:
    """The request as bytes on the wire (HTTP/1.1, keep-alive)."""
    body = request.read()
    target = request.url.raw_path.decode()
    lines = [f"{request.method} {target} HTTP/1.1", f"Host: {request.url.netloc.decode()}"]
    lines += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status code and headers (lower-case names) of one response, its body read and dropped
    (Content-Length framing only)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode()
    await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers


async def sequential(host: str, port: int, request: bytes, count: int) -> list[tuple[float, dict[str, str]]]:
    """`count` requests one after another on one keep-alive connection: (seconds, headers) of each."""
    reader, writer = await asyncio.open_connection(host, port)
    results = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            status, headers = await _read_response(reader)
            results.append((time.perf_counter() - start, headers))
            if status != 200:
                raise RuntimeError(f"status {status}")
    finally:
        writer.close()
    return results


async def closed_loop(host: str, port: int, request: bytes, connections: int, seconds: float) -> float:
    """Requests per second over `seconds`; raises on any status but 200."""
    stop = time.perf_counter() + seconds
    done = 0

    async def connection() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop:
                writer.write(request)
                status, _ = await _read_response(reader)
                if status != 200:
                    raise RuntimeError(f"status {status}")
                done += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return done / (time.perf_counter() - started)
