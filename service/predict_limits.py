"""What one /predict may cost the API, how many run at once, and how often a checkpoint is loaded.

    check_input_budget(len(files), side, settings.max_predict_input_pixels)  # 422, before any decoding
    with slots.hold():                      # 429 + Retry-After when all slots are taken
        cache.get(...)                      # a miss takes a load from its LoadRate: 429 past it
        inputs = decoding(upload.pixels, decode_and_prepare)   # a large image: in one shared thread
    MicroBatcher(forward, max_batch=rows_per_forward(side))

Why (2 CPU cores, torch 2.14.1): a forward pass costs time and memory in proportion to its input
pixels, and the input side is whatever the client trained at (16..512). vgg11_bn at 512 px takes
0.6-1.5 s and holds about 500 bytes a pixel (126 MiB) for one image; loading its 491 MB checkpoint
(sha256 and read) takes 2.1 s of CPU.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, status
from fastapi.exceptions import RequestValidationError

from core.settings import get_settings

# Model-input pixels in one forward pass: one image at the largest side the engine trains (512), 28
# at 96 px. vgg11_bn holds 126 MiB for it, so the two passes a checkpoint may run at once stay far
# under the 1 GiB that 8 concurrent worst-case requests may add (docs/performance.md).
FORWARD_INPUT_PIXELS = 512 * 512
MAX_ROWS_PER_FORWARD = 128  # small images: past this a bigger batch is no faster on a CPU

# Past the running ones, up to 3 x limit more wait (in their threadpool thread, at no CPU cost) for
# up to 2 s: 32 clients at the default limit of 8 are all served (bench.predict_latency), and a
# burst is queued instead of refused. Anything beyond is refused at once.
WAITING_PER_SLOT = 3
WAIT_SECONDS = 2.0
RETRY_AFTER_SECONDS = 1  # a prediction takes milliseconds to seconds; the caller has waited already

LOAD_WINDOW_SECONDS = 60.0
T = TypeVar("T")

# Preparing an image of TRANSFERLAB_MAX_IMAGE_PIXELS (25 megapixels: an 84 KB PNG) holds about 465 MiB:
# its pixels, converted, then as floats before the resize. Eight requests at once held 1.8 GiB; taking
# turns they still held 1.1 GiB, as glibc keeps a freed arena per thread; one thread decoding all
# eight peaked at 575 MiB. So images over 1 megapixel (20 MiB prepared) are decoded by one thread.
LARGE_IMAGE_PIXELS = 1_000_000


class Busy(HTTPException):
    """429 with a Retry-After header, in seconds."""

    def __init__(self, detail: str, retry_after_seconds: int):
        super().__init__(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=detail,
            headers={"Retry-After": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds


def input_pixels(files: int, side: int) -> int:
    """What a request costs the model: files x the checkpoint's input side squared."""
    return files * side * side


def check_input_budget(files: int, side: int, budget: int) -> None:
    """422 naming `files` when files x side^2 is over the budget; checked before any file is opened."""
    cost = input_pixels(files, side)
    if cost <= budget:
        return
    fits = budget // (side * side)
    advice = (
        f"send at most {fits} files per request to this checkpoint"
        if fits
        else "this checkpoint's input is larger than the whole budget; raise the budget to use it"
    )
    raise RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ("body", "files"),
                "msg": f"{files} files x {side}x{side} model-input pixels = {cost} pixels; the budget is "
                f"{budget} per request (TRANSFERLAB_MAX_PREDICT_INPUT_PIXELS): {advice}",
                "input": files,
            }
        ]
    )


def rows_per_forward(side: int) -> int:
    """Images of this input side in one forward pass: FORWARD_INPUT_PIXELS' worth, at least one."""
    return max(1, min(MAX_ROWS_PER_FORWARD, FORWARD_INPUT_PIXELS // (side * side)))


class PredictionSlots:
    """At most `limit` requests hold a slot at once; up to `waiting` more wait `wait_seconds` for one;
    the rest get Busy (429)."""

    def __init__(self, limit: int, waiting: int | None = None, wait_seconds: float = WAIT_SECONDS):
        self.limit = limit
        self.waiting = WAITING_PER_SLOT * limit if waiting is None else waiting
        self.wait_seconds = wait_seconds
        self.running = 0
        self.waiters = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._changed:
            if self.running >= self.limit:
                if self.waiters >= self.waiting:
                    raise self._busy(f"with {self.waiters} more waiting")
                self.waiters += 1
                try:
                    free = self._changed.wait_for(lambda: self.running < self.limit, self.wait_seconds)
                finally:
                    self.waiters -= 1
                if not free:
                    raise self._busy(f"and none came free within {self.wait_seconds:g} s")
            self.running += 1
        try:
            yield
        finally:
            with self._changed:
                self.running -= 1
                self._changed.notify()

    def _busy(self, why: str) -> Busy:
        return Busy(
            f"/predict is at its limit of {self.limit} requests at once "
            f"(TRANSFERLAB_MAX_CONCURRENT_PREDICTIONS), {why}; retry after {RETRY_AFTER_SECONDS} s",
            RETRY_AFTER_SECONDS,
        )


class LoadRate:
    """At most `per_minute` checkpoint loads in any 60 s (a sliding window of their start times)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> None:
        """Count one load now, or raise Busy with the seconds until the oldest leaves the window."""
        with self._lock:
            now = self._clock()
            while self._starts and self._starts[0] <= now - LOAD_WINDOW_SECONDS:
                self._starts.popleft()
            if len(self._starts) >= self.per_minute:
                wait = max(1, math.ceil(self._starts[0] + LOAD_WINDOW_SECONDS - now))
                raise Busy(
                    f"{self.per_minute} checkpoints were loaded in the last minute, the limit "
                    "(TRANSFERLAB_MAX_MODEL_LOADS_PER_MINUTE); a checkpoint that is already loaded "
                    f"answers at once; retry this one after {wait} s",
                    wait,
                )
            self._starts.append(now)


def decoding(pixels: int, work: Callable[[], T]) -> T:
    """work() in this thread for an image of up to LARGE_IMAGE_PIXELS; for a larger one in the
    process's one decoding thread, after the large images that came before it."""
    if pixels <= LARGE_IMAGE_PIXELS:
        return work()
    return _large_images.submit(work).result()


_large_images = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict-decode")  # starts on use


@lru_cache
def _slots(limit: int) -> PredictionSlots:
    return PredictionSlots(limit)


async def prediction_slots_dependency() -> PredictionSlots:
    """The process's slots, sized by TRANSFERLAB_MAX_CONCURRENT_PREDICTIONS (tests override this)."""
    return _slots(get_settings().max_concurrent_predictions)


PredictionSlotsDep = Annotated[PredictionSlots, Depends(prediction_slots_dependency)]
