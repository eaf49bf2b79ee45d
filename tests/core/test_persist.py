"""Results are written idempotently: the same epoch, evaluation, cost or checkpoint twice is one row."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from core import persist
from core.models import Checkpoint, Cost, EpochMetric, Evaluation, Job


@dataclass
class Epoch:  # the fields of engine.results.EpochMetrics
    epoch: int
    phase: str
    loss: float
    accuracy: float = 0.5
    lr: float = 1e-3
    seconds: float = 1.0
    images_per_second: float = 100.0


def epoch_rows(sessions, job_id):
    with sessions() as session:
        rows = session.scalars(
            select(EpochMetric).where(EpochMetric.job_id == job_id).order_by(EpochMetric.epoch)
        ).all()
        return [(r.epoch, r.phase, r.loss) for r in rows]


def test_the_same_epoch_written_twice_is_one_row_with_the_latest_values(sessions, make_job):
    job_id = make_job()
    for loss in (2.0, 1.5):
        with sessions() as session:
            persist.upsert_epochs(session, job_id, [Epoch(1, "train", loss), Epoch(1, "val", loss)])
            session.commit()
    assert sorted(epoch_rows(sessions, job_id)) == [(1, "train", 1.5), (1, "val", 1.5)]


def test_epochs_beyond_the_resume_point_are_dropped(sessions, make_job):
    job_id = make_job()
    with sessions() as session:
        persist.upsert_epochs(session, job_id, [Epoch(e, "train", 1.0) for e in (1, 2, 3)])
        persist.drop_epochs_after(session, job_id, 1)
        session.commit()
    assert epoch_rows(sessions, job_id) == [(1, "train", 1.0)]


EVALUATION = {
    "accuracy": 0.9,
    "macro_f1": 0.8,
    "weighted_f1": 0.85,
    "per_class": [{"label": "0", "precision": 1.0, "recall": 0.5, "f1": 0.66, "support": 2}],
    "confusion_matrix": [[1, 1], [0, 2]],
}
COST = {
    "train_seconds": 1.0,
    "eval_seconds": 0.1,
    "trainable_parameters": 10,
    "total_parameters": 20,
    "parameter_updates": 100,
    "peak_memory_bytes": 1 << 20,
    "memory_device": "cpu",
}


def count(sessions, model, job_id) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(model.job_id == job_id))


def test_evaluation_and_cost_written_twice_are_one_row_each(sessions, make_job):
    job_id = make_job()
    for accuracy in (0.9, 0.95):
        with sessions() as session:
            persist.save_evaluation(session, job_id, {**EVALUATION, "accuracy": accuracy})
            persist.save_cost(session, job_id, {**COST, "train_seconds": accuracy})
            session.commit()
    assert count(sessions, Evaluation, job_id) == 1 and count(sessions, Cost, job_id) == 1
    with sessions() as session:
        assert session.get(Evaluation, job_id).accuracy == 0.95
        assert session.get(Cost, job_id).train_seconds == 0.95


def test_a_checkpoint_recorded_twice_is_one_row_under_an_id_stable_across_attempts(
    settings, sessions, make_job
):
    job_id = make_job()
    folder = settings.checkpoints_dir / persist.checkpoint_id_for(job_id)
    meta = {
        "architecture": "simple_cnn",
        "dataset": "stl10",
        "strategy": None,
        "class_names": ["a", "b"],
        "input": {"image_size": 32},
        "size_bytes": 123,
    }
    for sha in ("a" * 64, "b" * 64):
        with sessions() as session:
            job = session.get(Job, job_id)
            persist.save_checkpoint_row(
                session,
                job,
                checkpoints_dir=settings.checkpoints_dir,
                directory=folder,
                sha256=sha,
                meta=meta,
            )
            session.commit()
    assert count(sessions, Checkpoint, job_id) == 1
    with sessions() as session:
        row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id))
    assert row.id == persist.checkpoint_id_for(job_id) and row.path == row.id
    assert (row.sha256, row.class_names, row.size_bytes) == ("b" * 64, ["a", "b"], 123)


def test_checkpoint_ids_are_stable_per_job_and_distinct_between_jobs():
    assert persist.checkpoint_id_for("a" * 32) == persist.checkpoint_id_for("a" * 32)
    assert persist.checkpoint_id_for("a" * 32) != persist.checkpoint_id_for("b" * 32)
    assert len(persist.checkpoint_id_for("a" * 32)) == 32
