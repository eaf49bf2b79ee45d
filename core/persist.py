"""Writing a run's results as rows, idempotently: running the same job (or epoch) twice never
duplicates a row, it replaces it. Every function here leaves committing to the caller.

Epoch rows are keyed by (job_id, epoch, phase), evaluation and cost by job_id, the checkpoint by
job_id too, with an id derived from the job id so that every attempt writes the same folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.models import Checkpoint, Cost, EpochMetric, Evaluation, Job

_CHECKPOINT_NAMESPACE = uuid.UUID("5c1f3e4a-8f0b-4a53-9a55-2f4b6c7d8e90")
_EPOCH_FIELDS = ("loss", "accuracy", "lr", "seconds", "images_per_second")


def checkpoint_id_for(job_id: str) -> str:
    """The same id on every attempt: a retried job overwrites its own folder, never leaves two."""
    return uuid.uuid5(_CHECKPOINT_NAMESPACE, job_id).hex


def upsert_epochs(session: Session, job_id: str, metrics: Iterable[Any]) -> None:
    """Insert or replace epoch rows; `metrics` are engine.results.EpochMetrics (or alike)."""
    for m in metrics:
        row = session.scalar(
            select(EpochMetric).where(
                EpochMetric.job_id == job_id,
                EpochMetric.epoch == m.epoch,
                EpochMetric.phase == m.phase,
            )
        )
        if row is None:
            row = EpochMetric(job_id=job_id, epoch=m.epoch, phase=m.phase)
            session.add(row)
        for name in _EPOCH_FIELDS:
            setattr(row, name, float(getattr(m, name)))
    session.flush()


def drop_epochs_after(session: Session, job_id: str, epoch: int) -> None:
    """Forget epochs a dead attempt recorded beyond where this attempt resumes (0 = all of them)."""
    session.execute(delete(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch > epoch))


def save_evaluation(session: Session, job_id: str, evaluation: dict[str, Any]) -> None:
    row = session.get(Evaluation, job_id) or Evaluation(job_id=job_id)
    row.accuracy = float(evaluation["accuracy"])
    row.macro_f1 = float(evaluation["macro_f1"])
    row.weighted_f1 = float(evaluation["weighted_f1"])
    row.per_class = evaluation["per_class"]
    row.confusion_matrix = evaluation["confusion_matrix"]
    session.add(row)


def save_cost(session: Session, job_id: str, cost: dict[str, Any]) -> None:
    row = session.get(Cost, job_id) or Cost(job_id=job_id)
    for name in (
        "train_seconds",
        "eval_seconds",
        "trainable_parameters",
        "total_parameters",
        "parameter_updates",
        "peak_memory_bytes",
        "memory_device",
    ):
        setattr(row, name, cost[name])
    session.add(row)


def save_cost_details(session: Session, job_id: str, details: dict[str, Any]) -> None:
    """The cost row's phase split and numerics choice (the row save_cost added in this session)."""
    row = session.get(Cost, job_id)
    if row is not None:
        row.details = details


def save_checkpoint_row(
    session: Session,
    job: Job,
    *,
    checkpoints_dir: Path,
    directory: Path,
    sha256: str,
    meta: dict[str, Any],
) -> Checkpoint:
    """Record a written checkpoint folder (which must lie inside `checkpoints_dir`)."""
    relative = Path(directory).resolve().relative_to(Path(checkpoints_dir).resolve())
    row = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job.id))
    if row is None:
        row = Checkpoint(id=checkpoint_id_for(job.id), job_id=job.id)
        session.add(row)
    row.architecture = meta.get("architecture", job.architecture)
    row.dataset = meta.get("dataset", job.dataset)
    row.strategy = meta.get("strategy", job.strategy)
    row.class_names = list(meta["class_names"])
    row.input_spec = meta["input"]
    row.path = relative.as_posix()
    row.sha256 = sha256
    row.size_bytes = int(meta["size_bytes"])
    session.flush()
    return row
