"""The `Server-Timing` response header: where a request's time went, in milliseconds.

    timing = ServerTiming()
    with timing("model"):
        probs = forward(inputs)
    response.headers["Server-Timing"] = timing.header()   # "model;dur=0.62, total;dur=1.30"

Browsers' developer tools show it, and `bench/predict_latency.py` reads it to split a round trip into
the server's part and the network's and client's part.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class ServerTiming:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:  # a name timed twice (one per image group) adds up
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def header(self) -> str:
        total = time.perf_counter() - self.started
        parts = [f"{name};dur={seconds * 1000:.3f}" for name, seconds in self.seconds.items()]
        return ", ".join([*parts, f"total;dur={total * 1000:.3f}"])


def parse_server_timing(header: str) -> dict[str, float]:
    """{name: milliseconds} from a `Server-Timing` header (entries without a duration are skipped)."""
    result = {}
    for entry in header.split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key == "dur" and name:
                result[name] = float(value)
    return result
