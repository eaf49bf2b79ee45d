"""Response models, in families (Public / List) like the FastAPI template. The request bodies of
POST /jobs are core.requests (re-exported here), built on engine.spec."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.models import JobStatus
from core.requests import FinetuneJobCreate, JobCreate, PretrainJobCreate
from service.redact import redact_optional

# ---------------------------------------------------------------- errors


class ErrorPublic(BaseModel):
    """The body of every 4xx/5xx response but 422."""

    detail: str = Field(description="What was wrong, what is allowed, and what to do next.")


class JobLinks(BaseModel):
    self: str = Field(description="This job.")
    metrics: str = Field(description="Per-epoch metrics, evaluation and cost.")
    cancel: str = Field(description="POST here to cancel.")
    logs: str = Field(description="Its own log lines, as text.")
    source: str | None = Field(None, description="The job this one fine-tunes (finetune only).")
    source_checkpoint: str | None = Field(
        None, description="The checkpoint this one fine-tunes (finetune only)."
    )
    checkpoint: str | None = Field(None, description="The trained checkpoint, once there is one.")


class JobPublic(BaseModel):
    """A job: what it asked for and where it stands."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="Job id (32 hex digits).")
    kind: Literal["pretrain", "finetune"] = Field(description="pretrain or finetune.")
    status: JobStatus = Field(description="queued, running, succeeded, failed or cancelled.")
    dataset: str = Field(description="Data set the job trains on.")
    architecture: str = Field(description="Model architecture (a fine-tune keeps its source's).")
    strategy: str | None = Field(description="Fine-tuning strategy; null for pretrain.")
    source: str | None = Field(description="Id of the job whose checkpoint is fine-tuned; null for pretrain.")
    source_checkpoint: str | None = Field(
        None,
        description="Id of the checkpoint it fine-tunes: its source job's, or an imported one (which has "
        "no job); null for pretrain, for ImageNet weights and once that checkpoint is deleted.",
    )
    spec: dict[str, Any] = Field(
        description="The validated engine spec (PretrainSpec or FinetuneSpec), defaults filled in."
    )
    progress: float = Field(description="Share of all training steps done, 0..1.")
    current_epoch: int = Field(description="Last finished epoch (1-based); 0 before the first.")
    attempts: int = Field(
        description="Times a worker has started this job (a retry after a lost worker adds one)."
    )
    cancel_requested: bool = Field(description="A cancel was asked for while the job was running.")
    error: str | None = Field(
        description="Why the job failed; null otherwise. Server paths and hosts in it are redacted."
    )
    worker: str | None = Field(description="Worker that ran (or runs) the job.")
    device: str | None = Field(description="Device it trained on, e.g. cuda:0 or cpu.")
    precision: str | None = Field(
        description="Arithmetic it trained in, bf16 or fp32: hyperparameters.precision as resolved on "
        "its device; null before it starts."
    )
    checkpoint: str | None = Field(description="Id of the trained checkpoint, once there is one.")
    created_at: datetime = Field(description="When the job was posted (UTC).")
    started_at: datetime | None = Field(description="When a worker last started it (UTC).")
    finished_at: datetime | None = Field(description="When it reached a final status (UTC).")
    heartbeat_at: datetime | None = Field(description="Last sign of life from its worker (UTC).")
    disk_bytes: int | None = Field(
        None,
        description="Bytes its checkpoint, resume state, plots and log take on disk now; in GET "
        "/jobs/{id} (null in lists). DELETE /jobs/{id} frees them.",
    )
    links: JobLinks = Field(description="Related resources.")

    @classmethod
    def from_row(cls, job: Any) -> JobPublic:
        checkpoint_id = job.checkpoint.id if job.checkpoint is not None else None
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            dataset=job.dataset,
            architecture=job.architecture,
            strategy=job.strategy,
            source=job.source_job_id,
            source_checkpoint=job.source_checkpoint_id,
            spec=job.spec,
            progress=job.progress,
            current_epoch=job.current_epoch,
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            error=redact_optional(job.error),
            worker=job.worker,
            device=job.device,
            precision=job.precision,
            checkpoint=checkpoint_id,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            links=JobLinks(
                self=f"/jobs/{job.id}",
                metrics=f"/jobs/{job.id}/metrics",
                cancel=f"/jobs/{job.id}/cancel",
                logs=f"/jobs/{job.id}/logs",
                source=f"/jobs/{job.source_job_id}" if job.source_job_id else None,
                source_checkpoint=f"/checkpoints/{job.source_checkpoint_id}"
                if job.source_checkpoint_id
                else None,
                checkpoint=f"/checkpoints/{checkpoint_id}" if checkpoint_id else None,
            ),
        )


class JobList(BaseModel):
    data: list[JobPublic] = Field(description="This page of jobs, newest first.")
    count: int = Field(description="Jobs matching the filters, over all pages.")


# ---------------------------------------------------------------- metrics


class EpochMetricPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    epoch: int = Field(description="Epoch number, 1-based.")
    phase: Literal["train", "val"] = Field(description="train or val (validation split).")
    loss: float = Field(description="Mean cross-entropy loss over the phase.")
    accuracy: float = Field(description="Top-1 accuracy over the phase, 0..1.")
    lr: float = Field(description="Head learning rate at the end of the epoch.")
    seconds: float = Field(description="Wall-clock seconds the phase took.")
    images_per_second: float = Field(description="Throughput of the phase.")


class ClassMetricsPublic(BaseModel):
    label: str = Field(description="Class name.")
    precision: float = Field(description="Precision on the test split, 0..1.")
    recall: float = Field(description="Recall on the test split, 0..1.")
    f1: float = Field(description="F1 score on the test split, 0..1.")
    support: int = Field(description="Test images of this class.")


class EvaluationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    accuracy: float = Field(description="Top-1 accuracy on the test split, 0..1.")
    macro_f1: float = Field(description="Unweighted mean of the per-class F1 scores.")
    weighted_f1: float = Field(description="Per-class F1 weighted by support.")
    per_class: list[ClassMetricsPublic] = Field(description="Precision, recall, F1 and support per class.")
    confusion_matrix: list[list[int]] = Field(description="Counts; rows are true classes, columns predicted.")


class CostPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    train_seconds: float = Field(description="Wall-clock seconds spent training (all epochs).")
    eval_seconds: float = Field(description="Wall-clock seconds spent on the final evaluation.")
    trainable_parameters: int = Field(description="Parameters the strategy trained.")
    total_parameters: int = Field(description="All parameters of the model.")
    parameter_updates: int = Field(description="Trainable parameters x optimiser steps.")
    peak_memory_bytes: int = Field(description="Peak memory during the run, in bytes.")
    memory_device: str = Field(
        description="Where the peak was measured: cuda:N (allocator peak) or cpu (peak RSS)."
    )
    phase_seconds: dict[str, float] | None = Field(
        None,
        description="Wall seconds of the final attempt per phase: startup (claim to engine), model, data, "
        "calibration, features (frozen features computed once), train, validate, resume (resume-state "
        "writes), evaluate, checkpoint, release (memory given back), plots, record (the final write), "
        "other (the rest), total; null for jobs recorded before it existed.",
    )
    numerics: dict[str, Any] | None = Field(
        None,
        description="How the numerics were chosen: the chosen candidate (precision, channels_last, threads, "
        "compile), how (measured, cached, or why the defaults ran), the calibration's seconds and its "
        "trials (seconds per step, loss).",
    )


class MetricsPublic(BaseModel):
    """Everything a results table needs for one job; while it runs, the epochs so far."""

    epochs: list[EpochMetricPublic] = Field(description="One entry per epoch and phase, in order.")
    evaluation: EvaluationPublic | None = Field(description="Test-split evaluation; null until the job ends.")
    cost: CostPublic | None = Field(description="What the run cost; null until the job ends.")


# ---------------------------------------------------------------- checkpoints


class CheckpointPublic(BaseModel):
    """A trained checkpoint (safetensors weights plus metadata), usable by POST /predict."""

    model_config = ConfigDict(from_attributes=True)

    id: str = Field(description="Checkpoint id (32 hex digits).")
    job: str | None = Field(
        validation_alias="job_id", description="Id of the job that trained it; null for an imported one."
    )
    architecture: str = Field(description="Model architecture.")
    dataset: str = Field(description="Data set it was trained on.")
    strategy: str | None = Field(description="Fine-tuning strategy; null for a pretrain checkpoint.")
    class_names: list[str] = Field(description="Labels, in the order of the model's outputs.")
    input_spec: dict[str, Any] = Field(
        description="Preprocessing the model expects (image size, channels, normalisation); "
        "/predict applies it."
    )
    sha256: str = Field(description="sha256 of the weights file, checked before every load.")
    size_bytes: int = Field(description="Size of the weights file in bytes.")
    disk_bytes: int | None = Field(None, description="Bytes its folder (weights and metadata) takes on disk.")
    created_at: datetime = Field(description="When it was written (UTC).")
    # Names, tags and imports (issue #14): PATCH /checkpoints/{id}, POST /checkpoints.
    name: str | None = Field(None, description="Its name; POST /predict model=<name> uses the newest.")
    tags: list[str] = Field(default_factory=list, description="Free-form labels (PATCH to change).")
    origin: Literal["trained", "imported"] = Field(
        "trained", description="trained by a job here, or imported with POST /checkpoints."
    )


class CheckpointList(BaseModel):
    data: list[CheckpointPublic] = Field(description="This page of checkpoints, newest first.")
    count: int = Field(description="All checkpoints, over all pages.")


class WeightsPublic(BaseModel):
    """One architecture's ImageNet weight file (torchvision's), usable as source_weights 'imagenet'."""

    architecture: str = Field(description="resnet18, mobilenet_v3_small or vgg11_bn.")
    file_name: str = Field(description="torchvision's file name, expected in <data root>/weights/.")
    present: bool = Field(description="The file is there (its checksum is checked when a job loads it).")
    size_bytes: int | None = Field(description="Its size on disk; null when absent.")
    url: str = Field(description="Where to download it (or set TRANSFERLAB_DOWNLOAD=true).")


class WeightsList(BaseModel):
    data: list[WeightsPublic] = Field(description="One entry per architecture with ImageNet weights.")
    count: int = Field(description="Entries in data.")
    download: bool = Field(description="TRANSFERLAB_DOWNLOAD: whether a worker may fetch a missing file.")


# ---------------------------------------------------------------- predict


class TopPrediction(BaseModel):
    label: str = Field(description="Class name.")
    probability: float = Field(description="Softmax probability, 0..1.")


class PredictionPublic(BaseModel):
    filename: str = Field(description="Name of the uploaded file, as the client sent it.")
    label: str = Field(description="Most probable class.")
    index: int = Field(description="Index of that class in the checkpoint's class_names.")
    probability: float = Field(description="Its softmax probability, 0..1.")
    top: list[TopPrediction] = Field(description="The most probable classes, best first (up to 3).")


class PredictionResponse(BaseModel):
    checkpoint: str = Field(description="Id of the checkpoint that answered.")
    predictions: list[PredictionPublic] = Field(description="One per uploaded file, in upload order.")


# ---------------------------------------------------------------- health


class HealthPublic(BaseModel):
    status: Literal["ok"] = Field(description="Always ok: the process is up.")


class ReadinessPublic(BaseModel):
    status: Literal["ready"] = Field(description="ready: the database and the broker answered.")
    database: Literal["ok"] = Field(description="The database answered SELECT 1.")
    broker: Literal["ok"] = Field(description="The Celery broker accepted a connection.")


__all__ = ["FinetuneJobCreate", "JobCreate", "PretrainJobCreate"]  # re-exported request bodies
