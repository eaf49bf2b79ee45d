"""SQLAlchemy 2.0 models. The schema itself comes only from the Alembic migrations in alembic/versions;
keep these classes and the migrations in step (tests/service/test_migrations.py compares them)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # pretrain | finetune
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.queued)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated engine spec, as JSON
    dataset: Mapped[str] = mapped_column(String(32))
    architecture: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str | None] = mapped_column(String(16))
    source_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)  # 0..1
    current_epoch: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # starts so far, counted on claim
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    epochs: Mapped[list[EpochMetric]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="(EpochMetric.epoch, EpochMetric.phase)"
    )
    evaluation: Mapped[Evaluation | None] = relationship(back_populates="job", cascade="all, delete-orphan")
    cost: Mapped[Cost | None] = relationship(back_populates="job", cascade="all, delete-orphan")
    checkpoint: Mapped[Checkpoint | None] = relationship(back_populates="job", cascade="all, delete-orphan")


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", "phase", name="uq_epoch_metrics_job_epoch_phase"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(8))  # train | val
    loss: Mapped[float] = mapped_column(Float)
    accuracy: Mapped[float] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    images_per_second: Mapped[float] = mapped_column(Float)

    job: Mapped[Job] = relationship(back_populates="epochs")


class Evaluation(Base):
    __tablename__ = "evaluations"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    accuracy: Mapped[float] = mapped_column(Float)
    macro_f1: Mapped[float] = mapped_column(Float)
    weighted_f1: Mapped[float] = mapped_column(Float)
    per_class: Mapped[dict[str, Any]] = mapped_column(JSON)  # list of {label, precision, recall, f1, support}
    confusion_matrix: Mapped[dict[str, Any]] = mapped_column(JSON)  # list of lists, rows = true class
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="evaluation")


class Cost(Base):
    __tablename__ = "costs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    train_seconds: Mapped[float] = mapped_column(Float)
    eval_seconds: Mapped[float] = mapped_column(Float)
    trainable_parameters: Mapped[int] = mapped_column(BigInteger)
    total_parameters: Mapped[int] = mapped_column(BigInteger)
    parameter_updates: Mapped[int] = mapped_column(BigInteger)
    peak_memory_bytes: Mapped[int] = mapped_column(BigInteger)
    memory_device: Mapped[str] = mapped_column(String(32))

    job: Mapped[Job] = relationship(back_populates="cost")


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    architecture: Mapped[str] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str | None] = mapped_column(String(16))
    class_names: Mapped[dict[str, Any]] = mapped_column(JSON)  # list of str
    input_spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # engine.preprocess.InputSpec.to_dict()
    path: Mapped[str] = mapped_column(String(512))  # folder, relative to Settings.checkpoints_dir
    sha256: Mapped[str] = mapped_column(String(64))  # of model.safetensors, checked before every load
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    job: Mapped[Job] = relationship(back_populates="checkpoint")
