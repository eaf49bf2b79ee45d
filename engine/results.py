"""What a run reports: per-epoch metrics, the evaluation, the cost, the checkpoint, and the hooks
through which progress leaves the engine (the engine knows no database or queue)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch


@dataclass
class EpochMetrics:
    epoch: int  # 1-based
    phase: Literal["train", "val"]
    loss: float
    accuracy: float
    lr: float  # head learning rate at the end of the epoch
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClassMetrics:
    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Evaluation:
    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_class: list[ClassMetrics]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    # Kept for plots of correct and misclassified examples: test-split row indices, labels, predictions.
    sample_indices: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0, dtype=torch.long))
    true_labels: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0, dtype=torch.long))
    predicted_labels: torch.Tensor = field(
        repr=False, default_factory=lambda: torch.empty(0, dtype=torch.long)
    )
    probabilities: torch.Tensor = field(repr=False, default_factory=lambda: torch.empty(0, 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "weighted_f1": self.weighted_f1,
            "per_class": [asdict(c) for c in self.per_class],
            "confusion_matrix": self.confusion_matrix,
        }


@dataclass
class Cost:
    train_seconds: float
    eval_seconds: float
    trainable_parameters: int
    total_parameters: int
    parameter_updates: int  # trainable parameters x optimiser steps
    peak_memory_bytes: int
    memory_device: str  # "cuda:0" (allocator peak) or "cpu" (peak resident set size, sampled)
    # Wall seconds of this attempt per phase (engine.run: model, data, calibration, features, train,
    # validate, resume, evaluate, checkpoint, engine_total; the worker adds its own around them).
    phase_seconds: dict[str, float] = field(default_factory=dict)
    numerics: dict[str, Any] = field(default_factory=dict)  # engine.calibrate.Calibration.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckpointInfo:
    directory: Path
    weights_path: Path
    sha256: str
    meta: dict[str, Any]


@dataclass
class RunInfo:
    device: str
    total_epochs: int
    resumed_from_epoch: int  # 0 = fresh start
    steps_per_epoch: int
    precision: str  # what hyperparameters.precision resolved to: "bf16" or "fp32"


@dataclass
class RunResult:
    epochs: list[EpochMetrics]
    evaluation: Evaluation
    cost: Cost
    checkpoint: CheckpointInfo
    device: str
    precision: str  # as in RunInfo


class Hooks:
    """Override what you need. Every method is called from the training thread."""

    def on_start(self, info: RunInfo) -> None:
        """Once, after data and model are ready and before the first step."""

    def on_epoch(self, metrics: list[EpochMetrics]) -> None:
        """After each epoch, with its train (and val, when there is a validation split) metrics."""

    def on_progress(self, fraction: float) -> None:
        """After every batch: share of all training steps done, 0..1. Keep it cheap."""

    def should_stop(self) -> bool:
        """Polled after every batch (training, validation, test, feature caching) and right before each
        resume state and the checkpoint are written; True stops the run with JobCancelled, writing
        nothing more. Keep it cheap."""
        return False
