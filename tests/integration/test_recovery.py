"""Dead workers for real: kill -9 a `transferlab worker` mid-job over PostgreSQL and Redis.

The job's lease stops being renewed; a reaper (in `serve` and in every worker) queues it again once
the lease ran out (3 s), and the next worker resumes it from its last finished epoch. A job whose
worker dies every time is failed after TRANSFERLAB_MAX_ATTEMPTS (2 here) starts, with the reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from core.migrate import upgrade
from tests.integration.conftest import Stack, pretrain_body

EPOCHS = 12


@pytest.fixture(scope="module")
def stack(make_stack, postgres_url, redis_url) -> Iterator[Stack]:
    stack = make_stack(database_url=postgres_url, broker_url=redis_url, max_attempts="2")
    upgrade(postgres_url)
    api = stack.start_api(workers=0, wait=False)
    stack.wait_api(api)
    yield stack
    stack.stop_all()


def test_a_job_whose_worker_was_killed_is_resumed_by_another_worker(stack, fresh_workers):
    workers = [fresh_workers(stack, w) for w in stack.start_workers(2)]
    job_id = stack.submit(pretrain_body(epochs=EPOCHS))
    running = stack.wait(job_id, lambda job: job["status"] == "running" and job["current_epoch"] >= 2)
    first = stack.holder(running)
    stack.kill(first)

    job = stack.wait_succeeded(job_id, timeout=180)
    assert job["attempts"] == 2 and job["worker"] != running["worker"]
    (second,) = [w for w in workers if w is not first]
    second_log = next(log for _, p, log in stack.processes if p is second).read_text()
    resumed = re.search(rf"job {job_id}: .* resuming after epoch (\d+)", second_log)
    assert resumed and int(resumed.group(1)) >= 2, second_log[-3000:]
    keys = [(e["epoch"], e["phase"]) for e in stack.metrics(job_id)["epochs"]]
    assert keys == [(e, p) for e in range(1, EPOCHS + 1) for p in ("train", "val")]


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(stack, fresh_workers):
    for worker in stack.start_workers(2):
        fresh_workers(stack, worker)
    job_id = stack.submit(pretrain_body(epochs=1000))
    for attempt in (1, 2):
        job = stack.wait(job_id, lambda j, n=attempt: j["status"] == "running" and j["attempts"] == n)
        stack.kill(stack.holder(job))  # the other worker (or nobody, the second time) is left
    job = stack.wait(job_id, timeout=60)  # a reaper: 3 s of silence, looked at every 1.5 s
    assert job["status"] == "failed" and job["attempts"] == 2
    assert "lease of each of its 2 attempt(s) ran out" in job["error"]
    assert "TRANSFERLAB_MAX_ATTEMPTS=2" in job["error"]


def test_a_worker_stopped_with_sigterm_hands_its_job_to_another(stack, fresh_workers):
    workers = [fresh_workers(stack, w) for w in stack.start_workers(2)]
    job_id = stack.submit(pretrain_body(epochs=EPOCHS))
    running = stack.wait(job_id, lambda job: job["status"] == "running" and job["current_epoch"] >= 1)
    first = stack.holder(running)
    started = time.monotonic()
    assert stack.stop(first) == 0  # warm shutdown: the job goes back at its next batch
    assert time.monotonic() - started < 20

    job = stack.wait_succeeded(job_id, timeout=180)
    assert job["attempts"] == 1  # a graceful hand-over is not a failed start
    assert job["worker"] != running["worker"] and len(workers) == 2
