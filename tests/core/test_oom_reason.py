"""A job whose worker the kernel killed for lack of memory says so once it is given up on: the kernel
log parser, the evidence rules (this host, that pid, before the lease ran out), and the reason."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from core import recovery
from core.jobs import lost_reason, reap
from core.models import JobStatus

BOOTED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HERE = socket.gethostname()
# Real kernel lines (6.x), as /dev/kmsg records and as dmesg prints them.
KMSG_KILL = (
    "3,1523,98765432,-;Out of memory: Killed process 4242 (celery) total-vm:9019876kB, "
    "anon-rss:7340032kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:14844kB oom_score_adj:0\n"
)
DMESG_CGROUP_KILL = (
    "[ 5000.250000] Memory cgroup out of memory: Killed process 777 (python3) total-vm:3145728kB, "
    "anon-rss:2097152kB, file-rss:1024kB, shmem-rss:0kB, UID:0 pgtables:4500kB oom_score_adj:0\n"
)
NOISE = (
    "6,1524,98770000,-;oom_reaper: reaped process 4242 (celery), now anon-rss:0kB, file-rss:0kB\n"
    "[ 5001.000000] celery invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n"
    " SUBSYSTEM=memory\n"
)
KILLED_AT = BOOTED + timedelta(seconds=98.765432)


@pytest.fixture(autouse=True)
def booted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recovery, "boot_time", lambda: BOOTED)


def test_a_kmsg_record_of_an_oom_kill_gives_its_pid_command_and_time():
    [kill] = recovery.parse_oom_kills(KMSG_KILL, BOOTED)
    assert (kill.pid, kill.command, kill.at) == (4242, "celery", KILLED_AT)
    assert kill.message.startswith("Out of memory: Killed process 4242 (celery)")


def test_a_dmesg_line_of_a_cgroup_oom_kill_is_parsed_too():
    [kill] = recovery.parse_oom_kills(DMESG_CGROUP_KILL, BOOTED)
    assert (kill.pid, kill.command, kill.at) == (777, "python3", BOOTED + timedelta(seconds=5000.25))


def test_kernel_lines_that_are_not_a_kill_are_ignored():
    assert recovery.parse_oom_kills(NOISE, BOOTED) == []


def test_without_a_boot_time_a_kill_has_no_time():
    assert recovery.parse_oom_kills(KMSG_KILL, None)[0].at is None


def test_the_kill_of_this_hosts_worker_before_its_lease_ran_out_is_evidence():
    kill = recovery.oom_kill(f"{HERE}:4242", KILLED_AT + timedelta(seconds=55), KMSG_KILL + NOISE)
    assert kill is not None and kill.pid == 4242


def test_a_worker_on_another_host_has_no_evidence_here():
    assert recovery.oom_kill("elsewhere:4242", KILLED_AT + timedelta(seconds=55), KMSG_KILL) is None


def test_the_kill_of_another_pid_is_no_evidence():
    assert recovery.oom_kill(f"{HERE}:4243", KILLED_AT + timedelta(seconds=55), KMSG_KILL) is None


def test_a_kill_long_before_the_lease_ran_out_is_an_earlier_process_with_that_pid():
    assert recovery.oom_kill(f"{HERE}:4242", KILLED_AT + timedelta(hours=2), KMSG_KILL) is None


def test_an_unreadable_kernel_log_is_no_evidence_and_no_error(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setattr(recovery, "KMSG", str(tmp_path / "no-kmsg"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no dmesg either
    assert recovery.read_kernel_log() is None
    assert recovery.oom_kill(f"{HERE}:4242", KILLED_AT) is None


def test_the_reason_says_the_kernel_killed_the_worker_for_lack_of_memory_and_what_to_lower():
    reason = lost_reason(3, f"{HERE}:4242", KILLED_AT + timedelta(seconds=55), 3, kernel_log=KMSG_KILL)
    assert "gave up after TRANSFERLAB_MAX_ATTEMPTS=3" in reason
    assert f"The kernel of {HERE} killed that worker for lack of memory at 2026-03-01 12:01:38 UTC" in reason
    assert '"Out of memory: Killed process 4242 (celery)' in reason
    assert "hyperparameters.batch_size" in reason and "TRANSFERLAB_MAX_JOB_MEMORY_BYTES" in reason


def test_without_evidence_the_reason_points_at_the_workers_log():
    reason = lost_reason(3, f"{HERE}:9999", KILLED_AT, 3, kernel_log=KMSG_KILL)
    assert "memory" not in reason and reason.endswith("That worker's log says why it stopped renewing.")


def test_the_reaper_fails_a_job_whose_worker_was_oom_killed_with_that_reason(
    sessions, make_job, job_reader, monkeypatch: pytest.MonkeyPatch
):
    job_id = make_job(JobStatus.running, heartbeat_age=30, attempts=3, worker=f"{HERE}:4242")
    expired = job_reader(job_id).lease_expires_at
    monkeypatch.setattr(recovery, "boot_time", lambda: expired - timedelta(seconds=100))
    monkeypatch.setattr(recovery, "read_kernel_log", lambda: KMSG_KILL)  # killed 1.2 s before it ran out
    with sessions() as session:
        reaped = reap(session, lease_seconds=2, max_attempts=3, enqueue=lambda _: None)
    job = job_reader(job_id)
    assert reaped.ended == [job_id] and job.status == JobStatus.failed
    assert "killed that worker for lack of memory" in job.error
