"""Response models of /experiments and of the artifact lists; the comparison's own models are
core.experiments.schemas (it is computed there)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.experiments.schemas import Comparison, LayerProbeRow, Role, SummaryRow
from core.models import ExperimentStatus, JobStatus


class ExperimentJobPublic(BaseModel):
    """One job of an experiment, with the settings that tell it apart from its siblings."""

    id: str = Field(description="Job id; GET /jobs/{id} and /jobs/{id}/metrics for the rest.")
    role: Role = Field(description="pretrain, finetune, or control (the fine-tune from random weights).")
    strategy: str | None = Field(description="Fine-tuning strategy; null for the pre-train.")
    variant: str | None = Field(
        description="Strategy with its frozen blocks, e.g. partial-2; a layer probe by its block, probe-1; "
        "pixels for the pixels baseline; null for the pre-train."
    )
    frozen_blocks: int | None = Field(description="partial: leading blocks frozen; else null.")
    optimizer: str = Field(description="Optimiser: adam, adamw, rmsprop or sgd.")
    lr: float = Field(description="Peak learning rate of the head.")
    batch_size: int = Field(description="Images per optimiser step.")
    status: JobStatus = Field(description="queued, running, succeeded, failed or cancelled.")
    progress: float = Field(description="Share of its training steps done, 0..1.")
    current_epoch: int = Field(description="Last finished epoch (1-based); 0 before the first.")
    error: str | None = Field(description="Why it failed; null otherwise (server paths redacted).")


class ExperimentLinks(BaseModel):
    self: str = Field(description="This experiment.")
    report: str = Field(description="Its report: Markdown, or ?format=html with the plots embedded.")
    artifacts: str = Field(description="Its comparison plots.")
    cancel: str = Field(description="POST here to cancel it.")
    pretrain_job: str | None = Field(description="Its pre-train job.")


class ExperimentSummary(BaseModel):
    id: str = Field(description="Experiment id (32 hex digits).")
    name: str = Field(description="The name it was given.")
    status: ExperimentStatus = Field(description="pretraining, running, succeeded, failed or cancelled.")
    dataset: str = Field(description="Target data set of the fine-tunes.")
    architecture: str = Field(description="Model architecture (the pre-train's).")
    pretrain_job: str | None = Field(description="Id of the pre-train job (made here or reused).")
    error: str | None = Field(description="Why it failed or stopped; null otherwise (server paths redacted).")
    job_counts: dict[str, int] = Field(description="Its jobs by status (the reused pre-train excluded).")
    progress: float = Field(description="Mean progress of its jobs, 0..1 (fine-tunes count once made).")
    created_at: datetime = Field(description="When it was posted (UTC).")
    finished_at: datetime | None = Field(description="When it ended (UTC).")
    links: ExperimentLinks = Field(description="Related resources.")


class ExperimentPublic(ExperimentSummary):
    request: dict[str, Any] = Field(description="The validated request, defaults filled in.")
    jobs: list[ExperimentJobPublic] = Field(description="Pre-train first (when made here), then by creation.")
    comparison: Comparison | None = Field(description="Once the experiment has ended; null before.")
    summary: list[SummaryRow] | None = Field(
        None,
        description="The comparison's summary: per (variant, role, hyperparameters) the means over the "
        "seeds with 95% intervals and the paired transfer gains; null before the experiment has ended.",
    )
    layer_probes: list[LayerProbeRow] | None = Field(
        None,
        description="With layer_probes: one row per extractor block (its linear probe's test accuracy from "
        "the pre-trained and from the random-init extractor, paired by seed); null before the experiment "
        "has ended or without probes.",
    )


class ExperimentList(BaseModel):
    data: list[ExperimentSummary] = Field(description="This page, newest first.")
    count: int = Field(description="All experiments, over all pages.")


class ArtifactPublic(BaseModel):
    name: str = Field(description="File name, unique within its job or experiment.")
    title: str = Field(description="What it shows.")
    media_type: str = Field(description="MIME type, image/png.")
    size: int = Field(description="Bytes.")
    url: str = Field(description="Where to GET the file.")
    created_at: datetime = Field(description="When it was first written (UTC).")


class ArtifactList(BaseModel):
    data: list[ArtifactPublic] = Field(description="The artifacts, by name.")
    count: int = Field(description="How many.")
