"""Is another process using this process's CPU cores right now? Sampled, not averaged.

    OversubscriptionProbe()()     # True when others keep more than half a core of ours busy

The calibration's timings hold only while the machine stays as it was when they were taken
(engine/calibrate.py), so it asks whether others compete for its cores. The 1-minute load average
answered that before, and answered it wrong on a quiet machine right after a busy minute: a 2-core
worker's own previous job (2 threads training) leaves the load near 2 for a minute, so the next job's
calibration was marked busy, and a benchmark's textbook run (a main process and 2 DataLoader workers)
left it near 3. Now the cores this process may run on are sampled for SAMPLE_SECONDS while it sleeps:
their busy time is then others' (this process's threads wait meanwhile; a worker's heartbeat thread
wakes for microseconds). Where /proc/stat cannot be read (not Linux), the load average answers.
"""

from __future__ import annotations

import os
import time

SAMPLE_SECONDS = 0.2
BUSY_CORES = 0.5  # others' use of our cores above this is contention


def usable_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _cpu_ticks(cpus: set[int]) -> dict[int, tuple[int, int]] | None:
    """(all ticks, idle ticks) per CPU in `cpus`, from /proc/stat; None where it cannot be read."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
                    continue
                ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                out[int(name[3:])] = (sum(ticks), ticks[3] + ticks[4])
    except (OSError, ValueError, IndexError):
        return None
    return out or None


def others_busy_cores(seconds: float = SAMPLE_SECONDS, sleep=time.sleep) -> float | None:
    """How many of this process's cores others kept busy over `seconds` (None: cannot tell)."""
    cpus = usable_cpus()
    before = _cpu_ticks(cpus)
    sleep(seconds)
    after = _cpu_ticks(cpus)
    if before is None or after is None:
        return None
    busy = 0.0
    for cpu, (total, idle) in after.items():
        if cpu not in before:
            continue
        elapsed = total - before[cpu][0]
        if elapsed > 0:
            busy += (elapsed - (idle - before[cpu][1])) / elapsed
    return busy


def oversubscribed() -> bool:
    """Others keep more than BUSY_CORES of our cores busy (or, without /proc/stat, the last minute's
    load average is above our cores)."""
    busy = others_busy_cores()
    if busy is not None:
        return busy > BUSY_CORES
    try:
        return os.getloadavg()[0] > len(usable_cpus())
    except OSError:
        return False


class OversubscriptionProbe:
    """Asked at most once, and only when asked: a cached choice measured on a quiet machine needs no
    sample, so a job that reuses one pays nothing for it (the sample costs SAMPLE_SECONDS)."""

    def __init__(self, sample=oversubscribed):
        self._sample, self.value = sample, None

    def __call__(self) -> bool:
        if self.value is None:
            self.value = bool(self._sample())
        return self.value
