"""The reaper's pass, as the worker's loop and `transferlab serve` run it every stale window / 2:

    recover(session, settings, enqueue)

1. jobs whose lease ran out: queued and sent again (resumed from their last saved epoch by the next
   claim), failed after TRANSFERLAB_MAX_ATTEMPTS, or cancelled when a cancel was pending;
2. queued jobs no worker claimed within the stale window (a lost broker message): sent again;
3. experiments that can move on (a hook that never ran: a worker killed after its last commit): the
   step their jobs allow is taken. No GET request ever does this.
Every change is a conditional UPDATE: any number of reapers can run at once.

A job given up on says why when this machine's kernel log knows: `oom_kill(worker, lease_expired_at)`
finds "Out of memory: Killed process <pid>" for the worker's "host:pid" (core.jobs.lost_reason).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from core.experiments.orchestrate import advance_open
from core.jobs import Enqueue, Reaped, reap
from core.settings import Settings

log = logging.getLogger(__name__)


def forget_run_state(settings: Settings, job_id: str) -> None:
    """Remove an ended job's resume state (runs/<job_id>): nothing will resume it any more."""
    shutil.rmtree(settings.runs_dir / job_id, ignore_errors=True)


def recover(session: Session, settings: Settings, enqueue: Enqueue) -> Reaped:
    """One reaper pass over jobs and experiments. Commits."""
    reaped = reap(
        session,
        lease_seconds=settings.stale_after_seconds,
        max_attempts=settings.max_attempts,
        enqueue=enqueue,
    )
    for job_id in reaped.ended:
        forget_run_state(settings, job_id)
    advance_open(session, enqueue)
    return reaped


# ---------------------------------------------------------------- a worker the kernel killed

# "Out of memory: Killed process 4242 (celery) total-vm:..." and the cgroup's "Memory cgroup out of
# memory: Killed process 4242 (python3) ...", after a /dev/kmsg prefix ("3,1523,98765432,-;": level,
# sequence, microseconds since boot) or a dmesg one ("[ 98.765432] ": seconds since boot).
_OOM_KILL = re.compile(
    r"^(?:\d+,\d+,(?P<usec>\d+),[^;]*;|\[\s*(?P<sec>\d+\.\d+)\]\s*)?"
    r"(?P<message>.*out of memory: killed process (?P<pid>\d+) \((?P<command>[^)]*)\).*)$",
    re.IGNORECASE,
)
# A kill counts when it came before the lease ran out (the renewals stopped with the process) and
# not long before: longer than any stale window, shorter than it takes pids to come round again.
OOM_KILL_WINDOW = timedelta(hours=1)
OOM_KILL_SLACK = timedelta(minutes=1)  # the kernel's clock since boot drifts from the wall clock
KMSG = "/dev/kmsg"


@dataclass(frozen=True)
class OomKill:
    pid: int
    command: str
    at: datetime | None  # UTC; None when the line carries no time
    message: str  # the kernel's line, without its prefix


def parse_oom_kills(text: str, booted_at: datetime | None) -> list[OomKill]:
    """Every out-of-memory kill in kernel log text (/dev/kmsg records or dmesg lines), in order."""
    kills = []
    for line in text.splitlines():
        match = _OOM_KILL.match(line.strip())
        if match is None:
            continue
        if match["usec"] is not None:
            since_boot: float | None = int(match["usec"]) / 1e6
        else:
            since_boot = float(match["sec"]) if match["sec"] is not None else None
        at = booted_at + timedelta(seconds=since_boot) if booted_at and since_boot is not None else None
        kills.append(OomKill(int(match["pid"]), match["command"], at, match["message"].strip()))
    return kills


def read_kernel_log() -> str | None:
    """This machine's kernel log: /dev/kmsg when readable, else `dmesg`; None when neither is (an
    unprivileged container, kernel.dmesg_restrict). Never raises."""
    try:
        fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        fd = None
    if fd is not None:
        records = []
        try:
            while True:  # one record per read; EAGAIN at the end of the buffer
                try:
                    records.append(os.read(fd, 8192).decode("utf-8", "replace"))
                except BrokenPipeError:  # a record overwritten while reading: skip on
                    continue
        except OSError:
            pass
        finally:
            os.close(fd)
        if records:
            return "".join(records)
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def boot_time() -> datetime | None:
    """When this machine booted (the kernel log counts from then), from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            for line in stat:
                if line.startswith("btime "):
                    return datetime.fromtimestamp(int(line.split()[1]), UTC)
    except (OSError, ValueError):
        pass
    return None


def oom_kill(
    worker: str | None, lease_expired_at: datetime | None, kernel_log: str | None = None
) -> OomKill | None:
    """The kernel's out-of-memory kill of this worker ("host:pid"), when it ran on this machine and
    the log shows one before its lease ran out. `kernel_log` None reads this machine's log."""
    host, _, pid = (worker or "").rpartition(":")
    if not pid.isdigit() or host != socket.gethostname():
        return None
    text = read_kernel_log() if kernel_log is None else kernel_log
    if not text:
        return None
    kills = [k for k in parse_oom_kills(text, boot_time()) if k.pid == int(pid)]
    if lease_expired_at is not None:
        earliest, latest = lease_expired_at - OOM_KILL_WINDOW, lease_expired_at + OOM_KILL_SLACK
        kills = [k for k in kills if k.at is None or earliest <= k.at <= latest]
    return kills[-1] if kills else None


def oom_note(kill: OomKill, host: str) -> str:
    """What lost_reason adds when the kernel killed the worker for lack of memory."""
    when = f" at {kill.at:%Y-%m-%d %H:%M:%S} UTC" if kill.at else ""
    return (
        f'The kernel of {host} killed that worker for lack of memory{when}: "{kill.message}". Lower '
        "hyperparameters.batch_size or data.image_size, give the worker more memory, or set "
        "TRANSFERLAB_MAX_JOB_MEMORY_BYTES to what a worker has, so such jobs are refused up front."
    )
