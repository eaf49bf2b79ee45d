"""What a job will cost, estimated when it is submitted, and the limits on it (TRANSFERLAB_MAX_*).

    estimate = estimate_job(spec, architecture)          # work in FLOPs, peak training memory
    check_job(estimate, settings)                         # BudgetExceeded (422) naming the limit
    new_jobs = check_experiment(request, planned, architecture, settings)   # each job, and the sum
    with admitting():                                     # one admission at a time in this process
        check_capacity(session, settings, new_jobs)       # QueueFull (429, Retry-After)
        ...create the rows...
    limit = time_limit(estimate, settings)                # what the worker enforces (limit.seconds)

    work   = epochs x training images x input pixels x 3 x forward FLOPs a pixel   (train: fwd + bwd)
           + (epochs x validation images + test images) x input pixels x forward FLOPs a pixel
    memory = min(batch, training images) x input pixels x 2 x saved activation bytes a pixel
           + parameters x 16 bytes (fp32 weights, gradients, Adam's two moments)
    time limit = max(TRANSFERLAB_JOB_TIME_LIMIT_MIN_SECONDS,
                     work / TRANSFERLAB_JOB_TIME_LIMIT_FLOPS_PER_SECOND x TRANSFERLAB_JOB_TIME_LIMIT_FACTOR)

The estimates lean high: a linear or partial fine-tune trains less than the whole model (its frozen
prefix runs once, without autograd), and a data root may hold fewer images than the official split
(the shared STL-10 subset has 1,000 of 5,000). lp_ft's two phases split the epochs, so their sum is
`epochs`. Memory leaves out what does not grow with the request: the worker process itself (about
0.8 GB with torch), the decoded splits (0.4 GB for STL-10) and the frozen-feature cache (at most
2 GiB on a CPU, engine.job_data). Re-measure the factors with `python -m core.budgets`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.datasets import split_images
from core.experiments.plan import PlannedJob, count_jobs
from core.experiments.schemas import ExperimentCreate
from core.models import Experiment, ExperimentStatus, Job, JobStatus
from core.settings import Settings
from engine.spec import Architecture, BuiltinDataset, FinetuneSpec, PretrainSpec

log = logging.getLogger(__name__)

# Images in each official split (train, test). The estimate counts these; a smaller copy on disk
# only makes it an over-estimate.
SPLIT_IMAGES: dict[str, tuple[int, int]] = {
    BuiltinDataset.stl10: (5_000, 8_000),
    BuiltinDataset.mnist: (60_000, 10_000),
    BuiltinDataset.fashion_mnist: (60_000, 10_000),
    BuiltinDataset.cifar10: (50_000, 10_000),
}
# A folder data set's split sizes where the estimate is not told them (an experiment's fine-tunes):
# engine.data.folders.FolderLimits' default cap on its images, so the estimate leans high.
FOLDER_IMAGES_BOUND = 50_000


@dataclass(frozen=True)
class ArchitectureCost:
    forward_flops_per_pixel: float
    saved_bytes_per_pixel: float  # activations autograd keeps for the backward pass, fp32
    parameters: int


# Measured once by `python -m core.budgets` (torch 2.14.1, CPU): build_model(architecture, 10) in
# train mode, x = randn(8, 3, 32, 32); torch.utils.flop_counter.FlopCounterMode over model(x), and
# torch.autograd.graph.saved_tensors_hooks counting each saved storage once (parameters and the input
# left out), both divided by 8 x 32 x 32 input pixels. At 64 and 96 px the numbers agree within 2%
# for simple_cnn and resnet18; mobilenet_v3_small and vgg11_bn fall (to 2,400 and 324,318 FLOPs at
# 96 px) because their heads' cost is per image, not per pixel: an over-estimate above 32 px.
ARCHITECTURES: dict[Architecture, ArchitectureCost] = {
    Architecture.simple_cnn: ArchitectureCost(29_442, 658, 423_082),
    Architecture.resnet18: ArchitectureCost(72_298, 441, 11_181_642),
    Architecture.mobilenet_v3_small: ArchitectureCost(4_238, 365, 1_528_106),
    Architecture.vgg11_bn: ArchitectureCost(531_920, 1_749, 128_812_810),
    Architecture.pixel_linear: ArchitectureCost(60, 12, 30_730),
}
# A training step costs the forward pass and a backward pass of about twice its FLOPs.
# (FlopCounterMode's own backward count agrees for resnet18, 1.93x, but counts mobilenet's
# depthwise convolutions as dense ones, 19x.)
TRAIN_FLOPS_OVER_FORWARD = 3.0
# Peak resident memory of a training step (batch 128, 32 and 96 px, CPU, ru_maxrss) less weights and
# optimiser state was 1.0-2.2x the saved activations: gradients of the activations and scratch space.
PEAK_OVER_SAVED = 2.0
BYTES_PER_PARAMETER = 16  # fp32 weight, its gradient, and Adam's two moments

RETRY_AFTER_SECONDS = 60  # jobs take minutes to hours: asking again sooner finds the queue as full


class BudgetExceeded(ValueError):
    """A job or experiment whose estimate is over a TRANSFERLAB_ limit (422); `loc` is the body's
    field to lower first, `value` what it holds."""

    def __init__(
        self,
        setting: str,
        limit: float,
        estimate: float,
        message: str,
        loc: tuple[str, ...],
        value: Any,
    ):
        super().__init__(message)
        self.setting, self.limit, self.estimate = setting, limit, estimate
        self.loc, self.value = loc, value

    def as_error(self, *prefix: str) -> dict[str, Any]:
        """One item of a 422's `detail`, as FastAPI writes them (prefix: the body's union tag)."""
        return {
            "type": "value_error",
            "loc": ("body", *prefix, *self.loc),
            "msg": str(self),
            "input": self.value,
        }


class QueueFull(RuntimeError):
    """Queued plus running jobs would pass TRANSFERLAB_MAX_ACTIVE_JOBS (429 with Retry-After)."""

    def __init__(self, message: str, retry_after_seconds: int = RETRY_AFTER_SECONDS):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class JobEstimate:
    architecture: Architecture
    epochs: int
    train_images: int
    val_images: int
    test_images: int
    image_size: int
    batch_size: int
    train_work: float  # FLOPs
    eval_work: float  # FLOPs: validation every epoch, the test split once
    peak_memory_bytes: int

    @property
    def work(self) -> float:
        return self.train_work + self.eval_work

    def describe(self) -> str:
        """What the estimate counted, for people: the model, epochs, images and input size."""
        return (
            f"{self.architecture.value}, {self.epochs} epoch(s) x {self.train_images:,} training images "
            f"(+ {self.val_images:,} validation a epoch, {self.test_images:,} test) at "
            f"{self.image_size}x{self.image_size} px, batch {self.batch_size}"
        )


# A layer probe (FinetuneSpec.probe_block) runs its frozen blocks forward once over every image and
# then trains one Linear layer of at most engine.models.PROBE_MAX_FEATURES inputs on the cached
# features. (A linear fine-tune caches its features too, but is estimated as if it trained the whole
# model: a safe over-estimate, kept so that its limits do not change.)
PROBE_MAX_FEATURES = 4096  # engine.models.PROBE_MAX_FEATURES, without importing torch
PROBE_HEAD_FLOPS = 2 * PROBE_MAX_FEATURES * 10  # every target data set has 10 classes


def estimate_job(
    spec: PretrainSpec | FinetuneSpec, architecture: str, split_images: tuple[int, int] | None = None
) -> JobEstimate:
    """The job's work and peak memory; `architecture` is the source model's for a fine-tune.
    split_images: (train, test) images on disk, for a folder data set; a built-in counts its official
    split, a folder set without it the folder limit (TRANSFERLAB_FOLDER_MAX_IMAGES' default) each."""
    if isinstance(spec, FinetuneSpec) and spec.probe_block is not None:
        return _estimate_probe(spec, architecture, split_images)
    return _estimate_trained(spec, architecture, split_images)


def _estimate_trained(
    spec: PretrainSpec | FinetuneSpec, architecture: str, split_images: tuple[int, int] | None
) -> JobEstimate:
    """Every epoch forward and backward through the whole model (frozen blocks counted as trained)."""
    arch = Architecture(architecture)
    cost = ARCHITECTURES[arch]
    data, hp = spec.data, spec.hyperparameters
    if split_images is None:
        split_images = SPLIT_IMAGES.get(spec.dataset, (FOLDER_IMAGES_BOUND, FOLDER_IMAGES_BOUND))
    split_train, split_test = split_images
    pool = min(data.train_samples or split_train, split_train)
    val = round(data.val_fraction * pool)  # as engine.datasets.train_val_split rounds it
    train = pool - val
    test = min(data.test_samples or split_test, split_test)
    pixels = data.image_size**2
    epochs = hp.epochs  # lp_ft's phases split these epochs between them
    batch = min(hp.batch_size, train)  # a larger batch is one batch of all the training images
    activations = batch * pixels * cost.saved_bytes_per_pixel * PEAK_OVER_SAVED
    return JobEstimate(
        architecture=arch,
        epochs=epochs,
        train_images=train,
        val_images=val,
        test_images=test,
        image_size=data.image_size,
        batch_size=hp.batch_size,
        train_work=epochs * train * pixels * cost.forward_flops_per_pixel * TRAIN_FLOPS_OVER_FORWARD,
        eval_work=(epochs * val + test) * pixels * cost.forward_flops_per_pixel,
        peak_memory_bytes=int(activations + cost.parameters * BYTES_PER_PARAMETER),
    )


def _estimate_probe(
    spec: FinetuneSpec, architecture: str, split_images: tuple[int, int] | None
) -> JobEstimate:
    """A layer probe: one forward pass of the whole extractor (an over-estimate: it runs only the
    blocks up to its own) over the training, validation and test images, then the Linear layer's
    training; peak memory is the feature cache (at most 4,096 fp32 features a row), one forward batch
    and the model."""
    whole = _estimate_trained(spec, architecture, split_images)
    cost = ARCHITECTURES[Architecture(architecture)]
    pixels = whole.image_size**2
    features_work = (whole.train_images + whole.val_images) * pixels * cost.forward_flops_per_pixel
    head_work = whole.epochs * whole.train_images * PROBE_HEAD_FLOPS * TRAIN_FLOPS_OVER_FORWARD
    eval_work = whole.test_images * pixels * cost.forward_flops_per_pixel
    eval_work += whole.epochs * whole.val_images * PROBE_HEAD_FLOPS
    cache = (whole.train_images + whole.val_images) * PROBE_MAX_FEATURES * 4  # fp32 features
    batch = min(whole.batch_size, whole.train_images) * pixels * cost.saved_bytes_per_pixel
    memory = int(cache + batch + cost.parameters * BYTES_PER_PARAMETER)
    return replace(whole, train_work=features_work + head_work, eval_work=eval_work, peak_memory_bytes=memory)


def check_job(
    estimate: JobEstimate, settings: Settings, what: str = "this job", loc: tuple[str, ...] = ()
) -> None:
    """BudgetExceeded when the estimate's work or memory is over its limit; `loc` is where the job's
    spec sits in the body."""
    if estimate.work > settings.max_job_work:
        raise BudgetExceeded(
            "TRANSFERLAB_MAX_JOB_WORK",
            settings.max_job_work,
            estimate.work,
            f"{what}: estimated work {estimate.work:.3g} FLOPs is over TRANSFERLAB_MAX_JOB_WORK="
            f"{settings.max_job_work:.3g} ({estimate.describe()}). Lower hyperparameters.epochs, "
            "data.image_size or data.train_samples, or use a smaller model.",
            (*loc, "hyperparameters", "epochs"),
            estimate.epochs,
        )
    if estimate.peak_memory_bytes > settings.max_job_memory_bytes:
        raise BudgetExceeded(
            "TRANSFERLAB_MAX_JOB_MEMORY_BYTES",
            settings.max_job_memory_bytes,
            estimate.peak_memory_bytes,
            f"{what}: estimated peak training memory {_gib(estimate.peak_memory_bytes)} is over "
            f"TRANSFERLAB_MAX_JOB_MEMORY_BYTES={settings.max_job_memory_bytes} "
            f"({_gib(settings.max_job_memory_bytes)}; {estimate.describe()}). Lower "
            "hyperparameters.batch_size or data.image_size.",
            (*loc, "hyperparameters", "batch_size"),
            estimate.batch_size,
        )


@dataclass(frozen=True)
class PlannedEstimate:
    name: str  # for people: "the pre-train", "control partial-2 (lr 0.01, batch 64, adam)"
    loc: tuple[str, ...]  # where its spec's fields sit in the experiment's body
    estimate: JobEstimate


def experiment_estimates(
    request: ExperimentCreate,
    planned: Sequence[PlannedJob],
    architecture: str,
    split_sizes: Callable[[str], tuple[int, int] | None] = lambda _name: None,
) -> list[PlannedEstimate]:
    """Each job the experiment will create: its pre-train, if any, then the plan's. split_sizes gives
    a folder data set's (train, test) images (core.datasets.split_images)."""
    named: list[PlannedEstimate] = []
    if request.pretrain is not None:
        pretrain = PretrainSpec.model_validate(request.pretrain.model_dump())
        estimate = estimate_job(pretrain, pretrain.model.value, split_sizes(pretrain.dataset))
        named.append(PlannedEstimate("the pre-train", ("pretrain",), estimate))
    target_sizes = split_sizes(request.dataset)
    for job in planned:
        hp = job.spec.hyperparameters
        name = f"{job.role} {job.variant} (lr {hp.lr:g}, batch {hp.batch_size}, {hp.optimizer.value})"
        # A baseline trains its own model (pixel_linear), not the pre-train's architecture.
        model = job.spec.model.value if isinstance(job.spec, PretrainSpec) else architecture
        named.append(PlannedEstimate(name, (), estimate_job(job.spec, model, target_sizes)))
    return named


def check_experiment(
    request: ExperimentCreate, planned: Sequence[PlannedJob], architecture: str, settings: Settings
) -> int:
    """BudgetExceeded when one of its jobs is over a job limit, or all of them over
    TRANSFERLAB_MAX_EXPERIMENT_WORK. Returns how many jobs it will create."""
    named = experiment_estimates(request, planned, architecture, lambda name: split_images(settings, name))
    for job in named:
        check_job(job.estimate, settings, what=job.name, loc=job.loc)
    total = sum(job.estimate.work for job in named)
    if total > settings.max_experiment_work:
        heaviest = max(named, key=lambda job: job.estimate.work)
        sweep = request.sweep.model_dump(mode="json") if request.sweep else None
        raise BudgetExceeded(
            "TRANSFERLAB_MAX_EXPERIMENT_WORK",
            settings.max_experiment_work,
            total,
            f"this experiment: estimated work {total:.3g} FLOPs over its {len(named)} jobs is over "
            f"TRANSFERLAB_MAX_EXPERIMENT_WORK={settings.max_experiment_work:.3g} (the heaviest, "
            f"{heaviest.name}: {heaviest.estimate.work:.3g}; {heaviest.estimate.describe()}). Shorten a "
            "sweep list, list fewer strategies or frozen_blocks, set controls to false, or lower "
            "hyperparameters.epochs, data.image_size or data.train_samples.",
            ("sweep",) if sweep else ("hyperparameters", "epochs"),
            sweep if sweep else request.hyperparameters.epochs,
        )
    return len(named)


# ---------------------------------------------------------------- queued plus running jobs

_admission = threading.Lock()


@contextmanager
def admitting() -> Iterator[None]:
    """Hold this around check_capacity and the writes it admits: two requests in this process never
    both see room for the last jobs. Other API processes are not serialised with this one: at the
    same moment each can admit one request past the cap (at most one experiment's 128 jobs each)."""
    with _admission:
        yield


def active_jobs(session: Session) -> int:
    """Queued plus running jobs, and the fine-tunes of experiments still pre-training (created when
    their pre-train succeeds)."""
    rows = session.scalar(
        select(func.count()).select_from(Job).where(Job.status.in_([JobStatus.queued, JobStatus.running]))
    )
    waiting = 0
    requests = session.scalars(
        select(Experiment.request).where(Experiment.status == ExperimentStatus.pretraining)
    )
    for stored in requests:
        try:
            waiting += count_jobs(ExperimentCreate.model_validate(stored)) - 1  # its pre-train is a row
        except ValueError:  # a request an older release stored: its fan-out fails to plan anyway
            log.warning("an experiment's stored request no longer validates; not counted")
    return (rows or 0) + waiting


def check_capacity(session: Session, settings: Settings, new_jobs: int) -> None:
    """QueueFull when `new_jobs` more would pass TRANSFERLAB_MAX_ACTIVE_JOBS. Writes nothing."""
    active = active_jobs(session)
    if active + new_jobs > settings.max_active_jobs:
        room = max(settings.max_active_jobs - active, 0)
        raise QueueFull(
            f"{active} jobs are queued or running (or waiting for their experiment's pre-train); "
            f"{new_jobs} more would pass TRANSFERLAB_MAX_ACTIVE_JOBS={settings.max_active_jobs} "
            f"(room for {room}). Try again in {RETRY_AFTER_SECONDS} s, once some have ended, or "
            "cancel jobs you no longer need."
        )


# ---------------------------------------------------------------- the worker's time limit


@dataclass(frozen=True)
class TimeLimit:
    seconds: float
    estimate: JobEstimate
    flops_per_second: float
    factor: float
    min_seconds: float

    def reason(self, ran_seconds: float) -> str:
        """The error of a job stopped at its limit: the limit, how it was derived, what to change."""
        return (
            f"stopped after {ran_seconds:.0f} s: over its time limit of {self.seconds:.0f} s, its "
            f"estimated work {self.estimate.work:.3g} FLOPs ({self.estimate.describe()}) / "
            f"TRANSFERLAB_JOB_TIME_LIMIT_FLOPS_PER_SECOND={self.flops_per_second:.3g} x "
            f"TRANSFERLAB_JOB_TIME_LIMIT_FACTOR={self.factor:g}, at least "
            f"TRANSFERLAB_JOB_TIME_LIMIT_MIN_SECONDS={self.min_seconds:g}. Not retried: lower "
            "hyperparameters.epochs, data.image_size or data.train_samples, or raise the factor for "
            "workers this slow."
        )


def time_limit(estimate: JobEstimate, settings: Settings) -> TimeLimit:
    """How long one attempt of the job may run before the worker fails it."""
    rate, factor = settings.job_time_limit_flops_per_second, settings.job_time_limit_factor
    seconds = max(settings.job_time_limit_min_seconds, estimate.work / rate * factor)
    return TimeLimit(seconds, estimate, rate, factor, settings.job_time_limit_min_seconds)


def _gib(size_bytes: float) -> str:
    return f"{size_bytes / 2**30:.2f} GiB"


def _saved_storage_bytes(model: Any, x: Any, left_out: set[int]) -> dict[int, int]:
    """Bytes of each storage autograd saves for the backward pass of model(x), but those left out."""
    import torch

    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in left_out:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return saved


def _measure() -> None:
    """Print ARCHITECTURES as measured on this machine (imports torch)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from engine.models import build_model, count_parameters

    batch, side = 8, 32
    pixels = batch * side * side
    for arch in Architecture:
        model = build_model(arch.value, 10).train()
        x = torch.randn(batch, 3, side, side)
        with FlopCounterMode(display=False) as counter:
            model(x)
        own = {p.untyped_storage().data_ptr() for p in model.parameters()}
        own.add(x.untyped_storage().data_ptr())
        saved = _saved_storage_bytes(model, x, own)
        print(
            f"Architecture.{arch.value}: ArchitectureCost({counter.get_total_flops() / pixels:_.0f}, "
            f"{sum(saved.values()) / pixels:_.0f}, {count_parameters(model):_}),"
        )


if __name__ == "__main__":
    _measure()
