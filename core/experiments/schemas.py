"""What an experiment is asked to do (ExperimentCreate) and what its comparison says (Comparison).

The fine-tune settings reuse engine.spec (Hyperparameters, DataOptions, PretrainSpec), and the sweep's
values take their bounds from Hyperparameters' own fields: one source for every default and bound.
Rules between fields (exactly one pre-train source, frozen_blocks only with partial, the job budget)
are checked in plan.check_request, which names the field in its 422.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.models import JobStatus
from core.requests import PretrainJobCreate
from engine.spec import (
    BuiltinDataset,
    DataOptions,
    DatasetName,
    FinetuneSpec,
    Hyperparameters,
    OptimizerName,
    Strategy,
)

MAX_EXPERIMENT_JOBS = 128
"""Jobs one experiment may create (pre-train, fine-tunes and controls). The seed preset needs 73:
3 strategies x a 12-point grid (2 lr x 2 batch sizes x 3 optimisers) x 2 (controls) + 1."""

MAX_SWEEP_VALUES = 8
MAX_REPEATS = 10


def _bounded(name: str, python_type: type, model: type[BaseModel] = Hyperparameters) -> Any:
    """The type of <model>.<name> with its bounds, for one value of a list (a sweep, frozen_blocks)."""
    return Annotated[(python_type, *model.model_fields[name].metadata)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _unique(values: list | None) -> list | None:
    if values is not None and len(set(values)) != len(values):
        raise ValueError("values must be unique")
    return values


class Sweep(_Strict):
    """Lists crossed into a grid; each grid point is one fine-tune per strategy variant. An axis left
    out keeps the value from `hyperparameters`."""

    lr: list[_bounded("lr", float)] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, max_length=MAX_SWEEP_VALUES, description="Learning rates, each in (0, 10]."
    )
    batch_size: list[_bounded("batch_size", int)] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, max_length=MAX_SWEEP_VALUES, description="Batch sizes, each 2..4096."
    )
    optimizer: list[OptimizerName] | None = Field(
        None, min_length=1, max_length=4, description="Optimisers: adam, adamw, rmsprop, sgd."
    )

    _check_unique = field_validator("lr", "batch_size", "optimizer")(_unique)


def _default_strategies() -> list[Strategy]:
    return [Strategy.linear, Strategy.partial, Strategy.full]


class ExperimentCreate(_Strict):
    """A study: one pre-train (new, or a succeeded pretrain job reused), then every strategy variant x
    sweep point fine-tuned on the target data set, each with a control from random weights."""

    name: str = Field(min_length=1, max_length=200, description="A name for people; need not be unique.")
    pretrain: PretrainJobCreate | None = Field(
        None, description="Pre-train this first (a pretrain job body without `kind`). Or give pretrained_job."
    )
    pretrained_job: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Id of a succeeded pretrain job to start from, instead of `pretrain`.",
    )
    dataset: DatasetName = Field(BuiltinDataset.mnist.value, description="Target data set of the fine-tunes.")
    strategies: list[Strategy] = Field(
        default_factory=_default_strategies,
        min_length=1,
        max_length=4,
        description="linear, partial, full (the seed's three, the default) and lp_ft.",
    )
    frozen_blocks: list[_bounded("frozen_blocks", int, FinetuneSpec)] | None = Field(  # type: ignore[valid-type]
        None,
        min_length=1,
        max_length=MAX_SWEEP_VALUES,
        description="partial: leading blocks to freeze, one variant per value, each 0 or more and within "
        "the architecture's blocks; null = half the blocks.",
    )
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Base hyperparameters of every fine-tune."
    )
    data: DataOptions = Field(default_factory=DataOptions, description="Target data: size, caps, val split.")
    sweep: Sweep | None = Field(None, description="Hyperparameter grid: lists of lr, batch_size, optimizer.")
    controls: bool = Field(
        True,
        description="Also run every fine-tune from randomly initialised weights, to measure what transfers.",
    )
    baselines: list[Literal["pixels"]] = Field(
        default_factory=list,
        max_length=1,
        description="Floors to compare every strategy with. pixels: a linear classifier on the normalised "
        "input pixels (model pixel_linear, from scratch) with the fine-tunes' hyperparameters, sweep and "
        "repeats: the floor a linear probe must beat before its features count as transferred.",
    )
    repeats: int = Field(
        1,
        ge=1,
        le=MAX_REPEATS,
        description=f"Runs of every fine-tune and control, with seeds seed .. seed+repeats-1 "
        f"(1..{MAX_REPEATS}). "
        "With 2 or more the summary gives means with 95% intervals and hyperparameters are chosen on the "
        "mean validation accuracy.",
    )

    linear_epochs: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Epochs of the linear probes (strategy linear, the layer probes and the pixels "
        "baseline), whose frozen features are computed once so that an epoch costs little; with "
        "hyperparameters.early_stopping_patience they stop on validation. null = hyperparameters.epochs.",
    )
    layer_probes: bool = Field(
        False,
        description="Also probe every extractor block: a linear classifier on the block's output, "
        "average-pooled to at most 4,096 features, trained on the target with the linear strategy's "
        "hyperparameters (features computed once), for the pre-trained extractor and for its "
        "random-init twin (same architecture and seed), each repeat. Results in `layer_probes` and "
        "layer_probes.png.",
    )
    transferability: bool = Field(
        False,
        description="The transferability curve (Yosinski et al., 2014): partial at every depth the "
        "architecture allows (1 .. blocks-1), with linear (every block frozen) and full (none) as its "
        "ends, all added to those asked for, each against its control. Drawn as transferability.png.",
    )
    # A second source for the same architecture (issue #14): every fine-tune is also run from
    # torchvision's ImageNet weights, paired with the same controls (core/experiments/compare.py).
    imagenet: bool = Field(
        False,
        description="Also run every fine-tune (variant, grid point, seed) from torchvision's ImageNet "
        "weights for the pre-train's architecture (resnet18, mobilenet_v3_small, vgg11_bn; the file must "
        "be in <data root>/weights/ or TRANSFERLAB_DOWNLOAD on). They appear as variants '<variant>"
        "@imagenet', beside the pre-trained source and the random-init controls.",
    )

    _check_unique = field_validator("strategies", "frozen_blocks", "baselines")(_unique)


# ---------------------------------------------------------------- responses

RunRole = Literal["finetune", "control", "baseline"]  # the runs a comparison compares
Role = Literal["pretrain", RunRole]


class ComparisonRow(BaseModel):
    """One fine-tune or control: what it was, how well it did, what it cost."""

    job_id: str = Field(description="The job this row describes.")
    role: RunRole = Field(
        description="finetune, control (from random weights) or baseline (pixels: no features at all)."
    )
    control: bool = Field(description="True for a run from randomly initialised weights.")
    status: JobStatus = Field(description="The job's status; metrics are null unless succeeded.")
    strategy: str = Field(description="linear, partial, full or lp_ft; pixels for the pixel baseline.")
    variant: str = Field(
        description="Strategy with its frozen blocks: linear, partial-2, full, lp_ft, pixels."
    )
    frozen_blocks: int | None = Field(
        description="Leading blocks frozen (linear: all; full: 0; lp_ft: null)."
    )
    optimizer: str = Field(description="Optimiser.")
    lr: float = Field(description="Peak learning rate of the head.")
    batch_size: int = Field(description="Images per optimiser step.")
    epochs: int = Field(description="Epochs planned.")
    epochs_run: int | None = Field(
        None, description="Epochs it trained (fewer than planned when early stopping ended it)."
    )
    seed: int = Field(0, description="Its seed (repeats run seed .. seed+repeats-1).")
    val_accuracy: float | None = Field(description="Validation accuracy after the last epoch.")
    test_accuracy: float | None = Field(description="Accuracy on the test split, 0..1.")
    macro_f1: float | None = Field(
        description="Unweighted mean of the per-class F1 scores on the test split."
    )
    train_seconds: float | None = Field(description="Wall-clock seconds spent training.")
    trainable_parameters: int | None = Field(description="Parameters the optimiser updated.")
    total_parameters: int | None = Field(description="All parameters of the model.")
    parameter_updates: int | None = Field(description="Trainable parameters x optimiser steps.")
    peak_memory_bytes: int | None = Field(description="Peak memory while training (see memory_device).")
    memory_device: str | None = Field(
        description="cuda:N (allocator peak) or cpu (peak resident set size of the worker process)."
    )
    transfer_gain: float | None = Field(
        description="Test accuracy minus that of its control (same strategy, blocks, hyperparameters)."
    )
    control_job_id: str | None = Field(description="Its control's job id (fine-tunes only).")
    source: Literal["pretrained", "imagenet"] | None = Field(
        None,
        description="Where a fine-tune's weights came from: the experiment's pre-train, or torchvision's "
        "ImageNet weights; null for controls and baselines.",
    )
    chosen: bool = Field(
        description="The run that stands for its variant: the hyperparameters with the best (mean) "
        "selection measure, at the first seed."
    )


class SummaryRow(BaseModel):
    """The runs of one (variant, role, hyperparameters) over its seeds: means and 95% t-intervals
    (half-widths; null with fewer than two finished runs)."""

    variant: str = Field(
        description="Strategy with its frozen blocks: linear, partial-2, full, lp_ft, pixels."
    )
    strategy: str = Field(description="linear, partial, full or lp_ft; pixels for the pixel baseline.")
    role: RunRole = Field(description="finetune, control (from random weights) or baseline (pixels).")
    optimizer: str = Field(description="Optimiser.")
    lr: float = Field(description="Peak learning rate of the head.")
    batch_size: int = Field(description="Images per optimiser step.")
    n: int = Field(description="Finished (succeeded) runs the means are over.")
    seeds: list[int] = Field(description="Seeds of those runs.")
    job_ids: list[str] = Field(description="Every run of the group, finished or not.")
    val_accuracy_mean: float | None = Field(description="Mean validation accuracy (last epoch run).")
    test_accuracy_mean: float | None = Field(description="Mean test accuracy, 0..1.")
    test_accuracy_ci95: float | None = Field(description="Half-width of its 95% t-interval.")
    macro_f1_mean: float | None = Field(description="Mean macro F1 on the test split.")
    macro_f1_ci95: float | None = Field(description="Half-width of its 95% t-interval.")
    train_seconds_mean: float | None = Field(description="Mean wall-clock seconds spent training.")
    train_seconds_ci95: float | None = Field(description="Half-width of its 95% t-interval.")
    epochs_run_mean: float | None = Field(description="Mean epochs trained (early stopping may end runs).")
    transfer_gain_mean: float | None = Field(
        description="Fine-tunes: mean of (test accuracy minus its control's on the same seed)."
    )
    transfer_gain_ci95: float | None = Field(description="Half-width of the paired gain's 95% t-interval.")
    transfer_measured: bool | None = Field(
        description="Fine-tunes with a gain: false when the gain's interval contains 0 (no transfer was "
        "measured), true otherwise."
    )
    chosen: bool = Field(
        description="The hyperparameters this variant (or baseline) picks: best mean selection measure."
    )


class BaselineComparison(BaseModel):
    """A chosen strategy against a chosen baseline: test accuracy minus the baseline's, paired seed
    by seed (the same split and data order), with the 95% t-interval of the mean difference."""

    variant: str = Field(description="The strategy variant (its chosen hyperparameters).")
    baseline: str = Field(description="The baseline (its chosen hyperparameters): pixels.")
    n: int = Field(description="Seeds at which both succeeded.")
    difference_mean: float | None = Field(description="Mean of (variant minus baseline) test accuracy.")
    difference_ci95: float | None = Field(description="Half-width of its 95% t-interval.")
    beats: bool | None = Field(
        description="true: above the baseline beyond the interval; false: not (the interval contains 0 or "
        "lies below it); null with fewer than two seeds."
    )


class BestStrategy(BaseModel):
    variant: str = Field(description="The best strategy variant, e.g. partial-2.")
    strategy: str = Field(description="Its strategy.")
    job_id: str = Field(description="Its chosen run.")
    measure: str = Field(description="What the choice was made on, e.g. validation accuracy (last epoch).")
    selection_value: float = Field(description="The variant's value of that measure (mean over seeds).")
    test_accuracy: float | None = Field(description="Test accuracy of the chosen hyperparameters (mean).")
    macro_f1: float | None = Field(description="Macro F1 on the test split (mean over seeds).")
    transfer_gain: float | None = Field(description="Its test accuracy minus its control's.")
    n: int = Field(1, description="Runs (seeds) the values are means over.")
    test_accuracy_ci95: float | None = Field(None, description="Half-width of the 95% t-interval.")
    transfer_gain_ci95: float | None = Field(None, description="Half-width of the paired gain's interval.")


class AxisValue(BaseModel):
    value: float | int | str = Field(description="One value of the swept hyperparameter.")
    runs: int = Field(description="Succeeded fine-tunes (not controls) with this value.")
    mean_selection_value: float = Field(description="Their mean selection measure.")
    best_selection_value: float = Field(description="Their best selection measure.")


class AxisFinding(BaseModel):
    axis: Literal["lr", "batch_size", "optimizer"] = Field(description="The swept hyperparameter.")
    measure: str = Field(description="The selection measure the values are compared on.")
    values: list[AxisValue] = Field(description="Each value tried, in the order of the sweep.")
    best_value: float | int | str = Field(description="The value with the best mean selection measure.")


class PretrainSummary(BaseModel):
    job_id: str = Field(description="The pre-train job.")
    status: JobStatus = Field(description="Its status.")
    dataset: str = Field(description="Source data set.")
    architecture: str = Field(description="Model architecture.")
    epochs: int = Field(description="Epochs it trained.")
    image_size: int = Field(description="Input side in pixels.")
    train_images: int | None = Field(description="Images trained on per epoch (from the epoch metrics).")
    val_images: int | None = Field(description="Images validated on per epoch.")
    test_images: int | None = Field(description="Test images evaluated (sum of per-class support).")
    test_accuracy: float | None = Field(description="Accuracy on the source test split, 0..1.")
    train_seconds: float | None = Field(description="Wall-clock seconds spent training.")


class LayerProbeRow(BaseModel):
    """The linear probes on one extractor block, over the seeds: the pre-trained extractor's and its
    random-init twin's test accuracy (means, with 95% t-interval half-widths; null with one run)."""

    block: int = Field(description="The block's position, 0-based (probe_block).")
    block_name: str = Field(description="What the architecture calls it: stem, layer1, stage2, ...")
    features: int | None = Field(
        description="Pooled features the probe's Linear layer reads (at most 4,096)."
    )
    n: int = Field(description="Seeds at which both the transferred and the random probe succeeded.")
    accuracy_transferred: float | None = Field(description="Mean test accuracy of the pre-trained probe.")
    accuracy_transferred_ci95: float | None = Field(description="Half-width of its 95% t-interval.")
    accuracy_random: float | None = Field(description="Mean test accuracy of the random-init twin's probe.")
    accuracy_random_ci95: float | None = Field(description="Half-width of its 95% t-interval.")
    gain_mean: float | None = Field(description="Mean of (transferred minus random), paired by seed.")
    gain_ci95: float | None = Field(description="Half-width of the paired gain's 95% t-interval.")
    epochs_run_mean: float | None = Field(description="Mean epochs the probes trained (early stopping).")
    job_ids: list[str] = Field(description="The probe jobs of this block, transferred and random.")


class Comparison(BaseModel):
    selection_measure: str = Field(description="What hyperparameters and the best strategy are chosen on.")
    rows: list[ComparisonRow] = Field(description="One per fine-tune and control, in plan order.")
    summary: list[SummaryRow] = Field(
        default_factory=list,
        description="One per (variant, role, hyperparameters): means over the seeds with 95% intervals.",
    )
    baselines: list[BaselineComparison] = Field(
        default_factory=list, description="Each chosen strategy against each chosen baseline."
    )
    best: BestStrategy | None = Field(description="Null when no fine-tune succeeded.")
    hyperparameters: list[AxisFinding] = Field(description="Per swept axis (more than one value).")
    pretrain: PretrainSummary | None = Field(description="The pre-train the fine-tunes started from.")
    layer_probes: list[LayerProbeRow] = Field(
        default_factory=list, description="layer_probes: one row per extractor block, in order."
    )
