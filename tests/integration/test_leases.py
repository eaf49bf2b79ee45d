"""Leases for real, over PostgreSQL and Redis with `transferlab serve` and `transferlab worker`:
processes with different stale settings agree on who holds a job, a displaced worker writes
nothing, and jobs whose queue messages were lost still run (and their experiment still ends)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import create_engine, text

from core.migrate import upgrade
from core.queue import QUEUE
from tests.integration.conftest import Stack, pretrain_body

# The API judges with a 3 s window (the stack's default); this worker renews only every 20 s, with
# its own 45 s window. Before leases the API re-queued its healthy job every 3 s.
SLOW_WORKER = {"heartbeat_seconds": "20", "stale_after_seconds": "45"}


@pytest.fixture(scope="module")
def stack(make_stack, postgres_url, redis_url) -> Iterator[Stack]:
    stack = make_stack(database_url=postgres_url, broker_url=redis_url)
    stack.redis_url = redis_url
    upgrade(postgres_url)
    api = stack.start_api(workers=0, wait=False)
    stack.wait_api(api)
    yield stack
    stack.stop_all()


def drop_queued_messages(stack: Stack) -> None:
    """What a flushed Redis (or a crash between commit and send) leaves: no message for queued jobs."""
    client = redis.Redis.from_url(stack.redis_url)
    client.delete(QUEUE, "unacked", "unacked_index")
    client.close()


def sql(postgres_url: str, statement: str, **params) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.execute(text(statement), params)
    engine.dispose()


def test_a_slow_heartbeat_and_a_short_api_window_run_a_30_second_job_once(stack, fresh_workers):
    worker = fresh_workers(stack, stack.start_worker(SLOW_WORKER))
    probe = stack.wait_succeeded(stack.submit(pretrain_body(epochs=2)))
    epoch_seconds = sum(e["seconds"] for e in stack.metrics(probe["id"])["epochs"]) / 2
    # Sized for about 80 s of training at the probe's pace, so that even on a faster turn it outlasts
    # the first renewal: the probe's two epochs include the warm-up, and a quiet machine then ran
    # later epochs twice as fast (280 epochs sized for 40 s took 20 s).
    epochs = min(1000, max(3, math.ceil(80 / max(epoch_seconds, 0.05))))  # 1000: the spec's bound

    started = time.monotonic()
    job = stack.wait_succeeded(stack.submit(pretrain_body(epochs=epochs)), timeout=240)
    took = time.monotonic() - started
    assert took >= 21, f"{epochs} epochs took {took:.0f} s: the job must outlast the first renewal (20 s)"
    assert job["attempts"] == 1 and stack.holder(job) is worker
    assert "no longer holds" not in stack.log_of(worker)


def test_a_displaced_worker_stops_and_writes_nothing(stack, fresh_workers, postgres_url):
    # Both renew only every 20 s, so neither renews by chance while the test expires a lease.
    workers = [fresh_workers(stack, w) for w in stack.start_workers(2, SLOW_WORKER)]
    epochs = 150
    job_id = stack.submit(pretrain_body(epochs=epochs))
    running = stack.wait(job_id, lambda j: j["status"] == "running" and j["current_epoch"] >= 2)
    first = stack.holder(running)
    # The first worker's lease runs out (as if it had stalled): the API's reaper queues the job again
    # and the idle worker takes it, while the first is still training.
    sql(
        postgres_url,
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id",
        id=job_id,
    )
    # Between the reaper's requeue and the second claim the job is briefly queued: not an end.
    ended = lambda j: j["status"] not in ("running", "queued")  # noqa: E731
    moved = stack.wait(job_id, lambda j: j["attempts"] == 2 or ended(j), timeout=60)
    assert moved["status"] == "running", f"the job ended before it could be displaced: {moved}"

    job = stack.wait_succeeded(job_id, timeout=240)
    (second,) = [w for w in workers if w is not first]
    assert job["attempts"] == 2 and stack.holder(job) is second
    assert "stopping: lost" in stack.log_of(first)
    # The holder's folder, renamed into place; no attempt folder (".<id>.attempt-N.<pid>.tmp") is left.
    checkpoints = sorted(p.name for p in (stack.home / "checkpoints").iterdir())
    assert job["checkpoint"] in checkpoints and not [n for n in checkpoints if n.endswith(".tmp")], (
        checkpoints
    )
    keys = [(e["epoch"], e["phase"]) for e in stack.metrics(job_id)["epochs"]]
    assert keys == [(e, p) for e in range(1, epochs + 1) for p in ("train", "val")]


def test_a_queued_job_whose_message_was_deleted_runs_after_the_reaper_sends_it_again(stack, fresh_workers):
    job_id = stack.submit(pretrain_body(epochs=2))  # no worker is consuming yet
    drop_queued_messages(stack)
    fresh_workers(stack, stack.start_worker())
    job = stack.wait_succeeded(job_id, timeout=120)  # the API's reaper: unclaimed for 3 s -> sent again
    assert job["attempts"] == 1


def test_an_experiment_whose_fan_out_messages_were_lost_still_finishes(stack, fresh_workers):
    worker = fresh_workers(stack, stack.start_worker())
    tiny = {"hyperparameters": {"epochs": 1, "batch_size": 32}, "data": {"image_size": 32}}
    body = {
        "name": "lost fan-out",
        "pretrain": {"model": "simple_cnn", **tiny},
        "strategies": ["linear"],
        **tiny,
    }
    response = stack.client.post("/experiments", json=body)
    assert response.status_code == 202, response.text
    experiment_id = response.json()["id"]
    deadline = time.monotonic() + 120
    while stack.client.get(f"/experiments/{experiment_id}").json()["status"] == "pretraining":
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.1)
    stack.stop(worker)  # hands back whatever it held; then every message of the fan-out is lost
    drop_queued_messages(stack)
    fresh_workers(stack, stack.start_worker())

    deadline = time.monotonic() + 180
    while (shown := stack.client.get(f"/experiments/{experiment_id}").json())["status"] == "running":
        assert time.monotonic() < deadline, stack.logs()
        time.sleep(0.2)
    assert shown["status"] == "succeeded", shown
    assert shown["job_counts"]["succeeded"] == 3  # pre-train, fine-tune, control
