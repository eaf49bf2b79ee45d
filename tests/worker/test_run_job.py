"""run_job in-process, end to end on tiny real-format data: claim, train, persist, clean up; and
what a worker that lost its lease leaves behind (nothing)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from core import persist
from core.jobs import Lease
from core.models import Artifact, Checkpoint, Cost, EpochMetric, Evaluation, Job, utcnow
from engine.checkpoint import sha256_file
from worker import tasks
from worker.hooks import JobHooks

QUICK = {"epochs": 2, "batch_size": 32}
SMALL = {"image_size": 32}


def pretrain_spec(epochs: int = 2) -> dict:
    return {
        "kind": "pretrain",
        "dataset": "stl10",
        "model": "simple_cnn",
        "hyperparameters": {**QUICK, "epochs": epochs},
        "data": SMALL,
    }


def finetune_spec(strategy: str = "linear") -> dict:
    return {
        "kind": "finetune",
        "dataset": "mnist",
        "strategy": strategy,
        "hyperparameters": QUICK,
        "data": SMALL,
    }


@pytest.fixture
def data(settings, tiny_data_root: Path, monkeypatch: pytest.MonkeyPatch):
    from core import db

    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(tiny_data_root))
    db.reset_caches()
    return tiny_data_root


def epoch_keys(sessions, job_id) -> list[tuple[int, str]]:
    with sessions() as session:
        return sorted(
            session.execute(
                select(EpochMetric.epoch, EpochMetric.phase).where(EpochMetric.job_id == job_id)
            ).all()
        )


def rows(sessions, model, job_id) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))


@pytest.fixture
def pretrained(data, sessions, make_job) -> str:
    job_id = make_job(spec=pretrain_spec())
    assert tasks.run_job(job_id) == "succeeded"
    return job_id


def test_a_pretrain_job_runs_and_records_everything(pretrained, settings, sessions, job_reader):
    job = job_reader(pretrained)
    assert (job.status, job.attempts, job.progress, job.current_epoch) == ("succeeded", 1, 1.0, 2)
    assert job.device == "cpu" and job.finished_at is not None and job.error is None
    assert epoch_keys(sessions, pretrained) == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    assert rows(sessions, Evaluation, pretrained) == 1 and rows(sessions, Cost, pretrained) == 1
    with sessions() as session:
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == pretrained))
    folder = settings.checkpoints_dir / checkpoint.path
    assert sha256_file(folder / "model.safetensors") == checkpoint.sha256
    assert checkpoint.class_names[0] == "airplane" and checkpoint.input_spec["image_size"] == 32
    assert not (settings.runs_dir / pretrained).exists()  # resume state is dropped once done


def test_a_job_records_its_phase_split_in_its_cost_record(pretrained, sessions):
    with sessions() as session:
        details = session.get(Cost, pretrained).details
    assert details is not None
    phases = details["phase_seconds"]
    named = ("startup", "model", "data", "calibration", "train", "validate", "evaluate", "checkpoint")
    for name in (*named, "examples", "record", "other", "total"):
        assert phases[name] >= 0, name
    parts = sum(v for k, v in phases.items() if k != "total")
    assert parts == pytest.approx(phases["total"], rel=0.01, abs=0.01)
    assert details["numerics"]["chosen"]["precision"] == "fp32"


@pytest.mark.parametrize("strategy", ["linear", "lp_ft"])
def test_a_finetune_job_starts_from_its_source_checkpoint(
    pretrained, sessions, make_job, job_reader, strategy
):
    job_id = make_job(spec=finetune_spec(strategy), source_job_id=pretrained)
    assert tasks.run_job(job_id) == "succeeded"
    with sessions() as session:
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id))
    assert checkpoint.dataset == "mnist" and checkpoint.strategy == strategy
    assert len(epoch_keys(sessions, job_id)) == 4


def test_a_duplicate_delivery_after_success_changes_nothing(pretrained, sessions, job_reader):
    assert tasks.run_job(pretrained) == "finished"
    assert job_reader(pretrained).attempts == 1
    assert len(epoch_keys(sessions, pretrained)) == 4
    assert rows(sessions, Checkpoint, pretrained) == 1


def test_a_crashed_attempt_is_resumed_without_duplicate_epochs(
    data, settings, sessions, make_job, job_reader, monkeypatch
):
    job_id = make_job(spec=pretrain_spec(epochs=4))
    original = JobHooks.on_epoch

    def die_after_epoch_two(self, metrics):
        original(self, metrics)
        if metrics[0].epoch == 2:
            raise KeyboardInterrupt("simulated kill -9")  # not an Exception: nothing is written

    monkeypatch.setattr(JobHooks, "on_epoch", die_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        tasks.run_job(job_id)
    assert job_reader(job_id).status == "running"
    assert (settings.runs_dir / job_id / "resume").exists()

    monkeypatch.setattr(JobHooks, "on_epoch", original)
    with sessions() as session:  # the dead worker's lease runs out
        session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        session.commit()
    starts: list[int] = []
    original_start = JobHooks.on_start
    monkeypatch.setattr(
        JobHooks,
        "on_start",
        lambda self, info: (starts.append(info.resumed_from_epoch), original_start(self, info)),
    )
    assert tasks.run_job(job_id) == "succeeded"
    job = job_reader(job_id)
    assert (job.status, job.attempts, starts) == ("succeeded", 2, [2])
    assert epoch_keys(sessions, job_id) == [(e, p) for e in (1, 2, 3, 4) for p in ("train", "val")]


def test_a_cancel_request_stops_the_run_at_the_next_batch(
    data, settings, sessions, make_job, job_reader, monkeypatch
):
    job_id = make_job(spec=pretrain_spec(epochs=50))
    original = JobHooks.on_epoch

    def cancel_after_first_epoch(self, metrics):
        original(self, metrics)
        with sessions() as session:  # what POST /jobs/{id}/cancel does to a running job
            session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
            session.commit()

    monkeypatch.setattr(JobHooks, "on_epoch", cancel_after_first_epoch)
    assert tasks.run_job(job_id) == "cancelled"
    job = job_reader(job_id)
    # The lease thread notices within one poll (0.2 s here), so a few tiny epochs may pass first.
    assert job.status == "cancelled" and 1 <= job.current_epoch < 50 and job.finished_at is not None
    assert not (settings.runs_dir / job_id).exists()
    assert rows(sessions, Checkpoint, job_id) == 0


def test_a_worker_shutting_down_hands_its_job_back_to_the_queue(
    data, sessions, make_job, job_reader, enqueued
):
    job_id = make_job(spec=pretrain_spec(epochs=50))
    shutdown = threading.Event()
    shutdown.set()
    assert tasks.execute_job(job_id, shutdown=shutdown) == "released"
    job = job_reader(job_id)
    assert (job.status, job.attempts) == ("queued", 0) and enqueued == [job_id]


def test_an_engine_error_fails_the_job_with_its_message_and_never_raises(
    data, settings, sessions, make_job, job_reader, tmp_path, monkeypatch
):
    from core import db

    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(tmp_path / "empty"))
    db.reset_caches()
    job_id = make_job(spec=pretrain_spec())
    assert tasks.run_job(job_id) == "failed"
    job = job_reader(job_id)
    assert job.status == "failed" and job.error.startswith("MissingDataError: data set 'stl10'")
    assert not (settings.runs_dir / job_id).exists()


def test_a_tampered_source_checkpoint_fails_the_finetune(
    pretrained, settings, sessions, make_job, job_reader
):
    with sessions() as session:
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == pretrained))
    weights = settings.checkpoints_dir / checkpoint.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    job_id = make_job(spec=finetune_spec(), source_job_id=pretrained)
    assert tasks.run_job(job_id) == "failed"
    assert job_reader(job_id).error.startswith("CheckpointError:")


def test_a_finetune_whose_source_has_no_checkpoint_fails_with_the_reason(
    data, sessions, make_job, job_reader
):
    source = make_job("failed", spec=pretrain_spec())
    job_id = make_job(spec=finetune_spec(), source_job_id=source)
    assert tasks.run_job(job_id) == "failed"
    assert "has no checkpoint" in job_reader(job_id).error


def test_each_attempt_writes_the_same_checkpoint_folder(pretrained, settings, sessions):
    with sessions() as session:
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == pretrained))
    assert checkpoint.path == persist.checkpoint_id_for(pretrained)
    assert [p.name for p in settings.checkpoints_dir.iterdir()] == [checkpoint.path]


def test_a_hand_back_that_cannot_reach_the_broker_leaves_the_job_to_the_reaper(
    data, sessions, make_job, job_reader, monkeypatch
):
    def broker_down(_job_id: str) -> None:
        raise ConnectionError("redis: connection refused")

    monkeypatch.setattr(tasks, "enqueue_run_job", broker_down)
    job_id = make_job(spec=pretrain_spec(epochs=50))
    shutdown = threading.Event()
    shutdown.set()
    assert tasks.execute_job(job_id, shutdown=shutdown) == "abandoned"
    job = job_reader(job_id)
    assert (job.status, job.attempts) == ("running", 1)  # never queued without a message


def test_a_database_outage_retries_the_message_instead_of_dropping_it(monkeypatch):
    from celery.exceptions import Retry
    from sqlalchemy.exc import OperationalError

    def database_down(_job_id: str) -> str:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    retries: list[dict] = []

    def retry(**options):
        retries.append(options)
        return Retry()

    monkeypatch.setattr(tasks, "execute_job", database_down)
    monkeypatch.setattr(tasks.run_job, "retry", retry)
    with pytest.raises(Retry):
        tasks.run_job("0" * 32)
    assert retries[0]["countdown"] == tasks.DB_RETRY_SECONDS and retries[0]["max_retries"] is None


def test_a_worker_that_lost_its_job_writes_no_epochs(sessions, make_job):
    from types import SimpleNamespace

    from engine.results import EpochMetrics

    job_id = make_job("running", worker="other:1", attempts=1, heartbeat_age=0)
    hooks = JobHooks(Lease(job_id, "me:1", 1), sessions, SimpleNamespace(should_stop=lambda: False))
    hooks.on_epoch([EpochMetrics(1, "train", 1.0, 0.5, 1e-3, 1.0, 10.0)])
    assert epoch_keys(sessions, job_id) == []


def test_a_displaced_worker_stops_and_writes_nothing_more(
    data, settings, sessions, make_job, job_reader, monkeypatch
):
    job_id = make_job(spec=pretrain_spec(epochs=50))
    original = JobHooks.on_epoch

    def taken_over_after_epoch_one(self, metrics):
        original(self, metrics)
        if metrics[0].epoch == 1:  # what another worker's take_over writes
            with sessions() as session:
                session.execute(update(Job).where(Job.id == job_id).values(worker="other:2", attempts=2))
                session.commit()

    monkeypatch.setattr(JobHooks, "on_epoch", taken_over_after_epoch_one)
    assert tasks.run_job(job_id) == "lost"
    job = job_reader(job_id)
    assert (job.status, job.worker, job.current_epoch) == ("running", "other:2", 1)  # the holder's now
    assert epoch_keys(sessions, job_id) == [(1, "train"), (1, "val")]
    assert rows(sessions, Checkpoint, job_id) == 0 and rows(sessions, Artifact, job_id) == 0
    assert not settings.checkpoints_dir.exists() or list(settings.checkpoints_dir.iterdir()) == []


def test_a_cancel_accepted_before_the_final_write_wins_over_success(
    data, settings, sessions, make_job, job_reader, monkeypatch
):
    job_id = make_job(spec=pretrain_spec(epochs=1))
    pick = tasks.pick_examples_safely

    def cancel_while_picking(*args, **kwargs):
        with sessions() as session:  # POST /jobs/{id}/cancel answered 202 just now
            session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
            session.commit()
        return pick(*args, **kwargs)

    monkeypatch.setattr(tasks, "pick_examples_safely", cancel_while_picking)
    assert tasks.run_job(job_id) == "cancelled"
    assert job_reader(job_id).status == "cancelled"
    assert rows(sessions, Checkpoint, job_id) == 0
    assert list(settings.checkpoints_dir.iterdir()) == []  # the attempt's folder is gone too
