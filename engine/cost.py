"""Cost accounting (the seed's section 7): device-synchronised timers and peak memory."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import psutil
import torch


class PeakMemory:
    """CUDA: the caching allocator's peak. CPU: peak resident set size, sampled every 20 ms by a thread
    (the process's lifetime maximum, ru_maxrss, would include earlier jobs in the same worker)."""

    def __init__(self, device: torch.device, interval_seconds: float = 0.02):
        self.device = device
        self.interval = interval_seconds
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def where(self) -> str:
        return str(self.device) if self.device.type == "cuda" else "cpu"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            process = psutil.Process()
            self.peak_bytes = process.memory_info().rss

            def sample() -> None:
                while not self._stop.wait(self.interval):
                    self.peak_bytes = max(self.peak_bytes, process.memory_info().rss)

            self._thread = threading.Thread(target=sample, name="peak-memory", daemon=True)
            self._thread.start()
        return self

    def read(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(max(self.peak_bytes, psutil.Process().memory_info().rss))

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak_bytes = self.read()


class Stopwatch:
    """Seconds between start and stop, with the device synchronised at both ends."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> Stopwatch:
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start


class PhaseClock:
    """Wall seconds per named phase of a job (startup, data, calibration, train, ...), device-synchronised.

    with clock.phase("data"):
        ...
    clock.seconds   # {"data": 0.41, ...}; a phase entered twice adds up
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(seconds, 0.0)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        watch = Stopwatch(self.device)
        try:
            with watch:
                yield
        finally:
            self.add(name, watch.seconds)
