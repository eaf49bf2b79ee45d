"""One job from spec to checkpoint: load data, build or load the model, train its phases, evaluate.

    from engine.run import run_job
    from engine.spec import PretrainSpec
    result = run_job(PretrainSpec(dataset="stl10", model="simple_cnn"), data_root=Path("data"),
                     workdir=Path("runs/1"), checkpoint_dir=Path("ckpt/1"))
    result.evaluation.accuracy

Calling run_job again with the same workdir resumes after the last finished epoch. The hooks'
should_stop is polled after every batch (features, training, validation, test) and before every write
(resume state, checkpoint): a worker that lost its job stops before it spends long or overwrites anything.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.calibration_trial import intra_op_threads
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cost import PeakMemory, PhaseClock, Stopwatch
from engine.datasets import DatasetInfo, FolderLimits, dataset_info
from engine.device import resolve_device
from engine.early_stopping import EarlyStopping
from engine.errors import CheckpointError, SpecError
from engine.evaluate import evaluate_predictions
from engine.job_data import (
    DEFAULT_FEATURE_CACHE_BYTES,
    JobData,
    feature_cache_bytes,
    load_job_data,
    phase_sources,
)
from engine.job_numerics import CalibrationOptions, choose_numerics
from engine.loop import Forward, Source, infer_logits, steps_per_epoch, stop_if_asked, train_epoch
from engine.models import (
    TransferNet,
    build_model,
    check_image_size,
    count_parameters,
    probe_model,
    replace_classifier,
)
from engine.numerics import Numerics
from engine.optim import make_optimizer, make_scheduler
from engine.preprocess import InputSpec
from engine.pretrained import WEIGHTS_FOLDER, build_imagenet_model
from engine.results import CheckpointInfo, Cost, EpochMetrics, Evaluation, Hooks, RunInfo, RunResult
from engine.resume import load_state, save_state
from engine.spec import Architecture, FinetuneSpec, Hyperparameters, PretrainSpec, Strategy
from engine.strategies import Phase, apply_freeze, param_groups, plan_phases, set_train_mode

__all__ = [
    "CalibrationOptions",
    "DEFAULT_FEATURE_CACHE_BYTES",
    "DEFAULT_RESUME_EVERY_SECONDS",
    "release_memory",
    "run_job",
    "validate_finetune",
    "validate_spec",
]

# Resume state (weights + optimiser: 134 MB for resnet18 with Adam, 0.1-0.8 s to write here) is saved
# at the end of an epoch when this long has passed since the last save, and at the end of each phase
# but the last (see _run_epoch).
# A short GPU epoch would otherwise spend more time saving than training; a dead worker loses at most
# this much work.
DEFAULT_RESUME_EVERY_SECONDS = 30.0


def validate_spec(spec: PretrainSpec | FinetuneSpec, architecture: str) -> None:
    """Raise SpecError for what the spec's own bounds cannot see, with the rules the run itself applies:
    the strategy's phases against the model's blocks (frozen_blocks, lp_ft's two phases), the input
    size against the architecture's smallest (engine.models.MIN_IMAGE_SIZES) and the
    optimiser's options (nesterov needs sgd with momentum). The API runs it before it queues a job."""
    if isinstance(spec, FinetuneSpec) and architecture == Architecture.pixel_linear:
        raise SpecError(
            "source",
            "a pixel_linear model has no features to transfer: fine-tune from a model with blocks, or "
            "train pixel_linear itself as a pretrain job (the pixel baseline)",
        )
    if isinstance(spec, FinetuneSpec):
        _check_source_weights(spec, architecture)
    plan_phases(spec, architecture)
    check_image_size(architecture, spec.data.image_size)
    hp = spec.hyperparameters
    if hp.early_stopping_patience is not None and spec.data.val_fraction == 0:
        raise SpecError(
            "hyperparameters.early_stopping_patience",
            "early stopping watches the validation accuracy: set data.val_fraction above 0, or leave "
            "early_stopping_patience out",
        )
    probe = nn.Parameter(torch.zeros(1))  # make_optimizer's checks, on one parameter instead of a model
    try:
        optimizer = make_optimizer([{"params": [probe], "lr": hp.lr}], hp)
        make_scheduler(optimizer, hp, total_steps=1)
    except SpecError:
        raise
    except ValueError as exc:  # torch's own refusal of an option
        raise SpecError("hyperparameters", str(exc)) from None


validate_finetune = validate_spec  # the older name, for fine-tune specs


def _check_source_weights(spec: FinetuneSpec, architecture: str) -> None:
    """source_weights and model go together, and only for an architecture with ImageNet weights."""
    from engine.pretrained import IMAGENET_FILES

    if spec.source_weights is None:
        if spec.model is not None:
            raise SpecError(
                "model",
                "a fine-tune keeps its source's architecture; give model only with source_weights",
            )
        return
    if spec.model is None:
        raise SpecError("model", "source_weights needs the architecture whose weights to start from")
    if spec.model not in IMAGENET_FILES:
        allowed = ", ".join(a.value for a in IMAGENET_FILES)
        raise SpecError("model", f"{spec.model.value} has no ImageNet weights; allowed: {allowed}")
    if spec.model.value != architecture:
        raise SpecError(
            "model", f"the job's architecture is {architecture}, the spec names {spec.model.value}"
        )


@dataclass
class _Model:
    """The built model, its source checkpoint's meta and its phases."""

    model: TransferNet
    source_meta: dict[str, Any] | None
    phases: list[Phase]


@dataclass
class _Job:
    """What every step reads: the spec resolved against device, data and model (whose weights train)."""

    spec: PretrainSpec | FinetuneSpec
    hooks: Hooks
    numerics: Numerics
    info: DatasetInfo
    input_spec: InputSpec
    augment: bool
    model: TransferNet
    source_meta: dict[str, Any] | None
    phases: list[Phase]
    data: JobData
    feature_cache_bytes: int
    steps: int  # optimiser steps an epoch
    criterion: nn.Module
    fingerprint: str
    resume_dir: Path
    resume_every_seconds: float
    clock: PhaseClock  # wall seconds per phase of this attempt (Cost.phase_seconds)
    numerics_record: dict[str, Any]  # how the numerics were chosen (Cost.numerics)

    @property
    def hp(self) -> Hyperparameters:
        return self.spec.hyperparameters

    @property
    def device(self) -> torch.device:
        return self.numerics.device

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)


@dataclass
class _RunState:
    """What training changes between steps, and what a resume state saves and restores."""

    generator: torch.Generator  # shuffling, on the CPU
    augment_generator: torch.Generator  # on the training device
    train_watch: Stopwatch
    resumed: dict[str, Any] | None = None  # the state this run continues; None on a fresh start
    resumed_from_epoch: int = 0
    epochs: list[EpochMetrics] = field(default_factory=list)
    parameter_updates: int = 0
    trainable_parameters: int = 0  # the most any phase trains
    last_save: float = 0.0  # time.monotonic() of the last resume-state save (or of the restore)
    early: EarlyStopping | None = None  # hyperparameters.early_stopping_patience, when set


@dataclass
class _PhaseInputs:
    sources: tuple[Source, Source, Source]  # train, validation, test
    forward: Forward  # from a source's outputs to logits: the part of the model this phase trains


@dataclass
class _PhaseTraining:
    phase: Phase
    last_epoch: int  # 1-based, counted over all phases
    inputs: _PhaseInputs
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None


def run_job(
    spec: PretrainSpec | FinetuneSpec,
    *,
    data_root: Path,
    workdir: Path,
    checkpoint_dir: Path,
    source_checkpoint: Path | None = None,
    source_sha256: str | None = None,
    hooks: Hooks | None = None,
    device: str = "auto",
    download: bool = False,
    feature_cache_bytes: int | None = None,
    resume_every_seconds: float = DEFAULT_RESUME_EVERY_SECONDS,
    calibration: CalibrationOptions | None = None,
    folder_limits: FolderLimits | None = None,
) -> RunResult:
    """Train the spec's phases and evaluate on the test split; JobCancelled when the hooks stop it.

    `calibration` says where the numerics' calibration (engine/job_numerics.py) caches its choice and
    how long it may take; None measures without a cache, within the default budget. `folder_limits`
    bound a folder data set (engine/data/folders.py); None: FolderLimits' defaults."""
    started = time.perf_counter()
    dev = resolve_device(device)
    info = dataset_info(spec.dataset, Path(data_root), folder_limits)  # a folder set's classes and stats
    weights_dir = Path(data_root) / WEIGHTS_FOLDER
    clock = PhaseClock(dev)
    with clock.phase("model"):
        built = _build(spec, info.num_classes, source_checkpoint, source_sha256, dev, weights_dir, download)
    state = _fresh_state(spec.hyperparameters.seed, dev)
    if spec.hyperparameters.early_stopping_patience is not None:
        state.early = EarlyStopping(spec.hyperparameters.early_stopping_patience)
    with PeakMemory(dev) as memory:
        job = _prepare(
            spec,
            built,
            hooks or Hooks(),
            clock,
            info=info,
            folder_limits=folder_limits,
            source_sha256=source_sha256,
            data_root=Path(data_root),
            download=download,
            cache_bytes=feature_cache_bytes,
            resume_dir=Path(workdir) / "resume",
            resume_every_seconds=resume_every_seconds,
            calibration=calibration or CalibrationOptions(),
        )
        with intra_op_threads(job.numerics.threads):
            _restore(job, state)
            job.hooks.on_start(
                RunInfo(
                    str(dev), job.total_epochs, state.resumed_from_epoch, job.steps, job.numerics.precision
                )
            )
            last_inputs = _train(job, state)
            evaluation, eval_seconds = _evaluate(job, last_inputs)
            with clock.phase("checkpoint"):
                checkpoint = _write_checkpoint(job, evaluation, Path(checkpoint_dir))
        peak = memory.read()
    cost = Cost(
        train_seconds=state.train_watch.seconds,
        eval_seconds=eval_seconds,
        trainable_parameters=state.trainable_parameters,
        total_parameters=count_parameters(built.model),
        parameter_updates=state.parameter_updates,
        peak_memory_bytes=peak,
        memory_device=memory.where,
        phase_seconds=clock.seconds,  # the same dict: release and engine_total are added below
        numerics=job.numerics_record,
    )
    precision = job.numerics.precision
    del job, last_inputs, built  # the data, cached features and model, before the memory goes back
    with clock.phase("release"):
        release_memory(dev)
    clock.add("engine_total", time.perf_counter() - started)
    return RunResult(state.epochs, evaluation, cost, checkpoint, device=str(dev), precision=precision)


def _build(
    spec: PretrainSpec | FinetuneSpec,
    num_classes: int,
    source: Path | None,
    source_sha256: str | None,
    device: torch.device,
    weights_dir: Path,
    download: bool,
) -> _Model:
    """Seed, build (or load) the model, plan its phases, and place it on the device (channels-last
    until the numerics say otherwise)."""
    hp = spec.hyperparameters
    torch.manual_seed(hp.seed)  # model init, new head, dropout
    source_meta: dict[str, Any] | None
    if isinstance(spec, FinetuneSpec) and spec.source_weights is not None:
        model, source_meta = _build_imagenet(spec, num_classes, weights_dir, download)
    else:
        model, source_meta = _build_model(spec, source, source_sha256, num_classes)
    phases = plan_phases(spec, Architecture(model.architecture).value)
    model.to(device).to(memory_format=torch.channels_last)  # inputs follow (engine/numerics.py)
    return _Model(model, source_meta, phases)


def _build_model(
    spec: PretrainSpec | FinetuneSpec,
    source: Path | None,
    source_sha256: str | None,
    num_classes: int,
) -> tuple[TransferNet, dict[str, Any] | None]:
    """A fresh model (pre-training), or the source checkpoint's with a new head for the target."""
    if isinstance(spec, PretrainSpec):
        return build_model(spec.model.value, num_classes), None
    if source is None:
        raise SpecError("source", "a finetune job needs a source checkpoint")
    state, meta = load_checkpoint(source, source_sha256)
    model = build_model(meta["architecture"], int(meta["num_classes"]))
    if not spec.random_init:  # the control keeps the architecture but none of the learnt weights
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"source weights do not fit {meta['architecture']}: {e}") from None
    replace_classifier(model, num_classes)
    if spec.probe_block is not None:  # a layer probe: the blocks up to it, pooled, and a new Linear
        model = probe_model(model, spec.probe_block, spec.data.image_size, num_classes)
    return model, meta


def _build_imagenet(
    spec: FinetuneSpec, num_classes: int, weights_dir: Path, download: bool
) -> tuple[TransferNet, dict[str, Any]]:
    """torchvision's ImageNet weights with a new head; the control (random_init) reads no file."""
    if spec.model is None:
        raise SpecError("model", "source_weights needs the architecture whose weights to start from")
    if spec.random_init:  # the same architecture and head, none of ImageNet's weights
        model = build_model(spec.model.value, num_classes)
        return model, {"source_weights": spec.source_weights, "sha256": None, "random_init": True}
    return build_imagenet_model(spec.model.value, num_classes, weights_dir, download)


def _fresh_state(seed: int, device: torch.device) -> _RunState:
    """Seeded generators and zero counters, as a run starts before any resume state is applied."""
    return _RunState(
        generator=torch.Generator().manual_seed(seed),
        # Augmentation draws come from a generator on the training device: a CPU one would make every
        # CUDA batch wait for a host-to-device copy of its random numbers.
        augment_generator=torch.Generator(device=device).manual_seed(seed),
        train_watch=Stopwatch(device),
    )


def _prepare(
    spec: PretrainSpec | FinetuneSpec,
    built: _Model,
    hooks: Hooks,
    clock: PhaseClock,
    *,
    info: DatasetInfo,
    folder_limits: FolderLimits | None,
    source_sha256: str | None,
    data_root: Path,
    download: bool,
    cache_bytes: int | None,
    resume_dir: Path,
    resume_every_seconds: float,
    calibration: CalibrationOptions,
) -> _Job:
    """Load the job's data onto the device, choose its numerics, and fix what every later step reads."""
    hp, device = spec.hyperparameters, next(built.model.parameters()).device
    input_spec = InputSpec.for_dataset(info, spec.data.image_size)
    with clock.phase("data"):
        data = load_job_data(spec, data_root, download, device, folder_limits)
    with clock.phase("calibration"):
        numerics, chosen = choose_numerics(
            spec, built.model, built.phases, data, input_spec, device, calibration
        )
    if not numerics.channels_last:
        built.model.to(memory_format=torch.contiguous_format)
    return _Job(
        spec=spec,
        hooks=hooks,
        numerics=numerics,
        info=info,
        input_spec=input_spec,
        augment=info.default_augment if spec.data.augment is None else spec.data.augment,
        model=built.model,
        source_meta=built.source_meta,
        phases=built.phases,
        data=data,
        feature_cache_bytes=feature_cache_bytes(numerics.device, cache_bytes),
        steps=steps_per_epoch(data.train[1].shape[0], hp.batch_size),
        criterion=nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing),
        fingerprint=_spec_fingerprint(spec, source_sha256, numerics.precision),
        resume_dir=resume_dir,
        resume_every_seconds=resume_every_seconds,
        clock=clock,
        numerics_record={**chosen.to_dict(), "cudnn_benchmark": torch.backends.cudnn.benchmark},
    )


def _spec_fingerprint(spec: PretrainSpec | FinetuneSpec, source_sha256: str | None, precision: str) -> str:
    # The resolved precision too: "auto" is bf16 on a GPU and fp32 on a CPU, and a run re-queued to
    # another kind of worker must not continue a state trained in the other arithmetic.
    fields = {"spec": spec.model_dump(mode="json"), "source": source_sha256, "precision": precision}
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _restore(job: _Job, state: _RunState) -> None:
    """Continue from the workdir's resume state when this same job (fingerprint) wrote it."""
    saved = load_state(job.resume_dir)
    if saved is not None and saved["fingerprint"] == job.fingerprint:
        # Anything else is a different spec that ran in this folder: start over rather than mix runs.
        state.resumed = saved
        state.resumed_from_epoch = saved["epoch"]
        state.epochs = [EpochMetrics(**m) for m in saved["epochs"]]
        state.train_watch.seconds = saved["train_seconds"]
        state.parameter_updates = saved["parameter_updates"]
        job.model.load_state_dict({k: v.to(job.device) for k, v in saved["model"].items()})
        state.generator.set_state(saved["generator"])
        state.augment_generator.set_state(saved["augment_generator"])
        torch.set_rng_state(saved["torch_rng"])
        if state.early is not None:
            state.early.load_state(saved.get("early_stopping"))
    state.last_save = time.monotonic()


def _train(job: _Job, state: _RunState) -> _PhaseInputs | None:
    """Train every phase's unfinished epochs; the last phase's inputs, or None if none was left."""
    last_inputs = None
    last = 0
    for phase in job.phases:
        first, last = last + 1, last + phase.epochs
        apply_freeze(job.model, phase.frozen_blocks)
        trainable = count_parameters(job.model, trainable_only=True)
        state.trainable_parameters = max(state.trainable_parameters, trainable)
        if state.resumed_from_epoch >= last:
            continue
        if state.early is not None and state.early.stopped:
            continue  # resumed after the last phase had stopped early
        training = _start_phase(job, state, phase, first, last)
        for epoch in range(max(first, state.resumed_from_epoch + 1), last + 1):
            _run_epoch(job, state, training, epoch)
            if state.early is not None and state.early.stopped:
                break
        last_inputs = training.inputs
    if state.early is not None:
        state.early.restore_best(job.model)  # evaluated and saved: the best epoch's weights
    return last_inputs


def _start_phase(job: _Job, state: _RunState, phase: Phase, first: int, last: int) -> _PhaseTraining:
    """A phase's inputs, optimiser and schedule; those of the resume state when it stopped inside it."""
    with state.train_watch, job.clock.phase("features"):
        inputs = _phase_inputs(job, phase)
    groups = param_groups(job.model, phase.frozen_blocks, job.hp.lr, phase.extractor_lr_factor)
    optimizer = make_optimizer(groups, job.hp)
    scheduler = make_scheduler(optimizer, job.hp, phase.epochs * job.steps)
    if state.resumed is not None and first <= state.resumed_from_epoch < last:
        optimizer.load_state_dict(state.resumed["optimizer"])
        if scheduler is not None and state.resumed["scheduler"] is not None:
            scheduler.load_state_dict(state.resumed["scheduler"])
    return _PhaseTraining(phase, last, inputs, optimizer, scheduler)


def _phase_inputs(job: _Job, phase: Phase) -> _PhaseInputs:
    """The phase's sources (cached frozen features when they fit) and the forward pass it trains."""
    sources = phase_sources(
        job.model,
        phase,
        job.data,
        job.input_spec,
        job.augment,
        job.feature_cache_bytes,
        job.numerics,
        job.hooks.should_stop,
    )
    forward = _suffix(job.model, phase.frozen_blocks)
    if job.numerics.compile and phase.frozen_blocks < len(job.model.blocks):
        # The calibration measured that compiling pays after its compile time; a head alone never
        # gets here (it is not a calibrated step: its cost is the frozen features, computed once).
        forward = torch.compile(forward)
    return _PhaseInputs(sources, forward)


def _suffix(model: TransferNet, frozen: int) -> Forward:
    """The part after the frozen blocks, as a function (bench/common.py wraps it to compile it)."""
    if frozen == len(model.blocks) and frozen > 0:  # the frozen prefix ran the neck too
        return model.head
    return lambda x: model.head(model.extract(x, start=frozen))


def _run_epoch(job: _Job, state: _RunState, training: _PhaseTraining, epoch: int) -> None:
    """Train and validate one epoch, count its updates, save a resume state when due, report it."""
    set_train_mode(job.model, training.phase.frozen_blocks)
    with state.train_watch:
        with job.clock.phase("train"):
            row = [_train_one_epoch(job, state, training, epoch)]
        with job.clock.phase("validate"):
            validation = _validate(job, training.inputs, epoch, lr=row[0].lr)
        if validation is not None:
            row.append(validation)
    state.parameter_updates += count_parameters(job.model, trainable_only=True) * job.steps
    state.epochs.extend(row)
    stopping = False
    if state.early is not None and validation is not None and training.last_epoch == job.total_epochs:
        stopping = state.early.update(epoch, validation.accuracy, job.model)
    due = time.monotonic() - state.last_save >= job.resume_every_seconds
    # The job's last epoch is saved only when due: what a save then protects is the evaluation and the
    # checkpoint (seconds), while writing it costs 0.1-0.8 s for resnet18; a worker that dies now
    # still loses no more than resume_every_seconds of training. Earlier phase ends are always saved.
    final = epoch == job.total_epochs or stopping  # early stopping watches the last phase only
    if due or (not final and (epoch == training.last_epoch or stopping)):
        _save_resume_state(job, state, training, epoch)
    job.hooks.on_epoch(row)


def _train_one_epoch(job: _Job, state: _RunState, training: _PhaseTraining, epoch: int) -> EpochMetrics:
    """One pass over the training rows; the metrics carry the head's learning rate at its end."""
    total_steps = job.total_epochs * job.steps
    steps_before = (epoch - 1) * job.steps
    step_numbers = iter(range(1, job.steps + 1))

    def fraction_done() -> float:
        return (steps_before + next(step_numbers)) / max(total_steps, 1)

    totals = train_epoch(
        training.inputs.sources[0],
        training.inputs.forward,
        training.optimizer,
        training.scheduler,
        job.criterion,
        job.hp.batch_size,
        state.generator,
        state.augment_generator,
        job.numerics,
        job.hooks,
        fraction_done,
    )
    lr = training.optimizer.param_groups[-1]["lr"]
    images_per_second = totals.rows / max(totals.seconds, 1e-9)
    return EpochMetrics(epoch, "train", totals.loss, totals.accuracy, lr, totals.seconds, images_per_second)


def _validate(job: _Job, inputs: _PhaseInputs, epoch: int, lr: float) -> EpochMetrics | None:
    """Loss and accuracy on the validation rows; None when the spec keeps none."""
    source = inputs.sources[1]
    if len(source) == 0:
        return None
    job.model.eval()
    with Stopwatch(job.device) as watch:
        logits = infer_logits(source, inputs.forward, job.hp.batch_size, job.numerics, job.hooks.should_stop)
        labels = job.data.val[1].cpu()
        loss = float(job.criterion(logits, labels))
        accuracy = float((logits.argmax(1) == labels).float().mean())
    images_per_second = len(source) / max(watch.seconds, 1e-9)
    return EpochMetrics(epoch, "val", loss, accuracy, lr, watch.seconds, images_per_second)


def _save_resume_state(job: _Job, state: _RunState, training: _PhaseTraining, epoch: int) -> None:
    """Save everything a rerun needs to continue after this epoch, unless the hooks say stop."""
    stop_if_asked(job.hooks.should_stop)  # a displaced worker must not overwrite its successor's state
    state.last_save = time.monotonic()
    with job.clock.phase("resume"):
        _write_resume_state(job, state, training, epoch)


def _write_resume_state(job: _Job, state: _RunState, training: _PhaseTraining, epoch: int) -> None:
    scheduler = training.scheduler
    save_state(
        job.resume_dir,
        {
            "fingerprint": job.fingerprint,
            "epoch": epoch,
            "epochs": [m.to_dict() for m in state.epochs],
            "train_seconds": state.train_watch.seconds,
            "parameter_updates": state.parameter_updates,
            "model": job.model.state_dict(),
            "optimizer": training.optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "generator": state.generator.get_state(),
            "augment_generator": state.augment_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "early_stopping": state.early.to_state() if state.early is not None else None,
        },
    )


def _evaluate(job: _Job, last_inputs: _PhaseInputs | None) -> tuple[Evaluation, float]:
    """The test split, read once, through the last phase's inputs; with the seconds it took."""
    last_phase = job.phases[-1]
    if last_inputs is None:  # every epoch had finished before a resume: rebuild the last phase's path
        apply_freeze(job.model, last_phase.frozen_blocks)
        with job.clock.phase("features"):
            last_inputs = _phase_inputs(job, last_phase)
    job.model.eval()
    with Stopwatch(job.device) as watch, job.clock.phase("evaluate"):
        logits = infer_logits(
            last_inputs.sources[2],
            last_inputs.forward,
            job.hp.batch_size,
            job.numerics,
            job.hooks.should_stop,
        )
        data = job.data
        evaluation = evaluate_predictions(logits, data.test[1].cpu(), data.class_names, data.test_indices)
    apply_freeze(job.model, 0)
    return evaluation, watch.seconds


def _write_checkpoint(job: _Job, evaluation: Evaluation, directory: Path) -> CheckpointInfo:
    """Write the trained weights and their meta, unless the hooks say stop."""
    meta = _checkpoint_meta(job, evaluation)
    stop_if_asked(job.hooks.should_stop)  # a displaced worker must not replace its successor's checkpoint
    return save_checkpoint(job.model, meta, directory)


def _checkpoint_meta(job: _Job, evaluation: Evaluation) -> dict[str, Any]:
    """What a checkpoint records beside its weights: enough to predict with it, and how it was made."""
    spec = job.spec
    finetune = spec if isinstance(spec, FinetuneSpec) else None
    return {
        "architecture": Architecture(job.model.architecture).value,
        "num_classes": job.info.num_classes,
        "class_names": list(job.data.class_names),
        "input": job.input_spec.to_dict(),
        "dataset": spec.dataset,
        "kind": spec.kind,
        "strategy": finetune.strategy.value if finetune else None,
        "frozen_blocks": job.phases[-1].frozen_blocks
        if finetune and finetune.strategy == Strategy.partial
        else None,
        "random_init": finetune.random_init if finetune else False,
        "probe_block": finetune.probe_block if finetune else None,  # engine.predict rebuilds the probe
        "source_sha256": job.source_meta and job.source_meta.get("sha256"),
        "source_weights": finetune.source_weights if finetune else None,
        "hyperparameters": job.hp.model_dump(mode="json"),
        "precision": job.numerics.precision,
        "data": spec.data.model_dump(mode="json"),
        "test_accuracy": evaluation.accuracy,
    }


def release_memory(device: torch.device) -> None:
    """Give cached device memory back after a job (or a cancelled one) so the next job starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
