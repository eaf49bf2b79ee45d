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
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """The one UTC datetime type: stored with a time zone, always read back as an aware UTC value.

    SQLite hands back naive datetimes and PostgreSQL aware ones in the session's time zone; every
    timestamp we write is UTC, so both are turned into aware UTC here, once, instead of in each schema.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: give every stored time in UTC (core.models.utcnow)")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class JobRole(StrEnum):
    """What a job is for inside an experiment (null for a job posted on its own)."""

    pretrain = "pretrain"
    finetune = "finetune"
    control = "control"  # the same fine-tune from a randomly initialised extractor
    baseline = "baseline"  # a model without transferred features (pixels: pixel_linear from scratch)


class ExperimentStatus(StrEnum):
    pretraining = "pretraining"  # its pre-train job is queued or running; no fine-tune exists yet
    running = "running"  # fine-tunes and controls are queued or running
    succeeded = "succeeded"  # every job ended and at least one fine-tune succeeded
    failed = "failed"  # the pre-train failed, or no fine-tune succeeded
    cancelled = "cancelled"


EXPERIMENT_TERMINAL = (ExperimentStatus.succeeded, ExperimentStatus.failed, ExperimentStatus.cancelled)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime()}


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
    precision: Mapped[str | None] = mapped_column(String(8))  # "bf16" | "fp32", set when it starts
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]  # the holder's last lease renewal
    # The lease: the holder's heartbeat sets it to now + that worker's own stale window. Claim and
    # reaper compare it with the clock, so processes with different settings agree on who holds a job.
    lease_expires_at: Mapped[datetime | None] = mapped_column(index=True)
    # When the queue message was last sent, and how often: a queued job unclaimed for too long is
    # sent again by the reaper, with a back-off that grows with send_count.
    sent_at: Mapped[datetime | None]
    send_count: Mapped[int] = mapped_column(Integer, default=0)
    # use_alter: experiments.pretrain_job_id points back at jobs, a cycle create_all must break.
    experiment_id: Mapped[str | None] = mapped_column(
        ForeignKey("experiments.id", name="fk_jobs_experiment_id", use_alter=True), index=True
    )
    role: Mapped[str | None] = mapped_column(String(16))  # pretrain | finetune | control
    # A fine-tune from a checkpoint named by id (an imported one has no job to name). SET NULL: a
    # deleted checkpoint leaves the job's history, and its worker fails naming the missing source.
    source_checkpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey(
            "checkpoints.id", name="fk_jobs_source_checkpoint_id", use_alter=True, ondelete="SET NULL"
        ),
        index=True,
    )

    epochs: Mapped[list[EpochMetric]] = relationship(
        back_populates="job", cascade="all, delete-orphan", order_by="(EpochMetric.epoch, EpochMetric.phase)"
    )
    evaluation: Mapped[Evaluation | None] = relationship(back_populates="job", cascade="all, delete-orphan")
    cost: Mapped[Cost | None] = relationship(back_populates="job", cascade="all, delete-orphan")
    checkpoint: Mapped[Checkpoint | None] = relationship(
        back_populates="job", cascade="all, delete-orphan", foreign_keys="Checkpoint.job_id"
    )
    experiment: Mapped[Experiment | None] = relationship(back_populates="jobs", foreign_keys=[experiment_id])


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
    per_class: Mapped[list[Any]] = mapped_column(JSON)  # list of {label, precision, recall, f1, support}
    confusion_matrix: Mapped[list[Any]] = mapped_column(JSON)  # list of lists, rows = true class
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
    # {"phase_seconds": {phase: wall seconds of the final attempt}, "numerics": how precision, layout
    # and threads were chosen}; null for a job that finished before migration 0006 (core/cost_record.py).
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    job: Mapped[Job] = relationship(back_populates="cost")


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Null for an imported checkpoint (POST /checkpoints): trained elsewhere, by no job here.
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    architecture: Mapped[str] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str | None] = mapped_column(String(16))
    class_names: Mapped[list[Any]] = mapped_column(JSON)  # list of str
    input_spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # engine.preprocess.InputSpec.to_dict()
    path: Mapped[str] = mapped_column(String(512))  # folder, relative to Settings.checkpoints_dir
    sha256: Mapped[str] = mapped_column(String(64))  # of model.safetensors, checked before every load
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # What a client calls it (/predict model=<name>: the newest of that name) and free-form labels
    # (PATCH /checkpoints/{id}; bounds in core/checkpoint_labels.py). origin: trained | imported.
    name: Mapped[str | None] = mapped_column(String(100), index=True)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    origin: Mapped[str] = mapped_column(String(16), default="trained")

    job: Mapped[Job | None] = relationship(back_populates="checkpoint", foreign_keys=[job_id])


class Experiment(Base):
    """A study: one pre-train (made here, or an earlier job reused), then fine-tunes and controls."""

    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True, default=ExperimentStatus.pretraining)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # the validated ExperimentCreate, as JSON
    dataset: Mapped[str] = mapped_column(String(32))  # the target data set of its fine-tunes
    architecture: Mapped[str] = mapped_column(String(32))
    # Made by this experiment (its experiment_id points back) or an earlier job reused. Null only
    # between the two inserts that create an experiment with its own pre-train (a cycle of keys).
    pretrain_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]

    jobs: Mapped[list[Job]] = relationship(
        back_populates="experiment", foreign_keys="Job.experiment_id", order_by="(Job.created_at, Job.id)"
    )
    pretrain_job: Mapped[Job | None] = relationship(foreign_keys=[pretrain_job_id], post_update=True)


class Artifact(Base):
    """A file the service made (a PNG plot), owned by a job or by an experiment, served by name."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
        UniqueConstraint("experiment_id", "name", name="uq_artifacts_experiment_name"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    experiment_id: Mapped[str | None] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))  # e.g. confusion_matrix.png
    title: Mapped[str] = mapped_column(String(200))  # what it shows, for lists and reports
    media_type: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512))  # relative to Settings.artifacts_dir
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
