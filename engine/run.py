"""One job from spec to checkpoint: load data, build or load the model, train its phases, evaluate.

    from engine.run import run_job
    from engine.spec import PretrainSpec
    result = run_job(PretrainSpec(dataset="stl10", model="simple_cnn"), data_root=Path("data"),
                     workdir=Path("runs/1"), checkpoint_dir=Path("ckpt/1"))
    result.evaluation.accuracy

Calling run_job again with the same workdir resumes after the last finished epoch.
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cost import PeakMemory, Stopwatch
from engine.datasets import DATASETS, load_split, stratified_subset, train_val_split
from engine.device import resolve_device
from engine.errors import CheckpointError, SpecError
from engine.evaluate import evaluate_predictions
from engine.loop import ImageSource, Source, infer_logits, precompute, steps_per_epoch, train_epoch
from engine.models import TransferNet, build_model, count_parameters, replace_classifier
from engine.numerics import Numerics, resolve_numerics
from engine.optim import make_optimizer, make_scheduler
from engine.preprocess import InputSpec
from engine.results import Cost, EpochMetrics, Hooks, RunInfo, RunResult
from engine.resume import load_state, save_state
from engine.spec import Architecture, FinetuneSpec, PretrainSpec
from engine.strategies import Phase, apply_freeze, param_groups, plan_phases, set_train_mode

# Cache a frozen prefix's outputs (partial strategy, no augmentation) only when they fit in this much
# memory: resnet18's layer1 output at 96x96 is 147 KB an image, 8.8 GB for MNIST's 60,000.
DEFAULT_FEATURE_CACHE_BYTES = 2 * 1024**3
# Resume state (weights + optimiser: 134 MB for resnet18 with Adam, 0.1-0.8 s to write here) is saved
# at the end of an epoch when this long has passed since the last save, and at the end of each phase.
# A short GPU epoch would otherwise spend more time saving than training; a dead worker loses at most
# this much work.
DEFAULT_RESUME_EVERY_SECONDS = 30.0


def validate_finetune(spec: FinetuneSpec, architecture: str) -> None:
    """Raise SpecError for what the spec's own bounds cannot see (frozen_blocks beyond the model)."""
    plan_phases(spec, architecture)


@dataclass
class _Data:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    test_indices: torch.Tensor
    class_names: tuple[str, ...]


def _load_data(spec: PretrainSpec | FinetuneSpec, root: Path, download: bool, device: torch.device) -> _Data:
    seed, options = spec.hyperparameters.seed, spec.data
    train = load_split(spec.dataset.value, "train", root, download)
    test = load_split(spec.dataset.value, "test", root, download)
    pool = stratified_subset(train.labels, options.train_samples, seed)
    train_pos, val_pos = train_val_split(train.labels[pool], options.val_fraction, seed)
    train_rows, val_rows = pool[train_pos], pool[val_pos]
    test_rows = stratified_subset(test.labels, options.test_samples, seed)

    def take(split, rows):
        return split.images[rows].to(device), split.labels[rows].to(device)

    return _Data(
        take(train, train_rows),
        take(train, val_rows),
        take(test, test_rows),
        test_rows,
        train.class_names,
    )


def _spec_fingerprint(spec: PretrainSpec | FinetuneSpec, source_sha256: str | None, precision: str) -> str:
    # The resolved precision too: "auto" is bf16 on a GPU and fp32 on a CPU, and a run re-queued to
    # another kind of worker must not continue a state trained in the other arithmetic.
    fields = {"spec": spec.model_dump(mode="json"), "source": source_sha256, "precision": precision}
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _prefix(model: TransferNet, frozen: int):
    """The frozen part as a function; with every block frozen it includes the neck (head inputs)."""
    if frozen == len(model.blocks):
        return lambda x: model.extract(x)
    return lambda x: model.extract(x, 0, frozen)


def _suffix(model: TransferNet, frozen: int):
    if frozen == len(model.blocks):
        return model.head
    return lambda x: model.head(model.extract(x, start=frozen))


def _sources(
    model: TransferNet,
    phase: Phase,
    data: _Data,
    spec_in: InputSpec,
    augment: bool,
    cache_bytes: int,
    numerics: Numerics,
) -> tuple[Source, Source, Source]:
    k = phase.frozen_blocks
    prefix = _prefix(model, k) if k > 0 else None
    train = ImageSource(*data.train, spec_in, augment, numerics, prefix)
    val = ImageSource(*data.val, spec_in, False, numerics, prefix)
    test = ImageSource(*data.test, spec_in, False, numerics, prefix)
    if prefix is None or augment or cache_bytes <= 0:  # 0 turns caching off (tests, benchmarks)
        return train, val, test
    # A frozen prefix on un-augmented inputs gives the same outputs every epoch: compute them once for
    # the splits read every epoch. The test split is read once, at the end, through the prefix.
    rows = len(train) + len(val)
    model.eval()
    bytes_per_row = train.batch(torch.arange(1, device=data.train[0].device), None)[0].nbytes
    if k < len(model.blocks) and bytes_per_row * rows > cache_bytes:
        return train, val, test
    # resnet18 on 2 CPU cores runs 235 images/s at batch 32-128 but 174 at 512 (bench/: linear +19%).
    batch = 512 if data.train[0].device.type == "cuda" else 64
    return precompute(train, batch), precompute(val, batch), test


def _feature_cache_bytes(device: torch.device, given: int | None) -> int:
    """The caller's cap, else 2 GiB on the CPU and a quarter of the free memory on a GPU (partial on
    all of MNIST at 96x96 caches about 5 GB of resnet18 layer1 outputs: worth it on an H200)."""
    if given is not None:
        return given
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 4
    return DEFAULT_FEATURE_CACHE_BYTES


def _build_model(
    spec: PretrainSpec | FinetuneSpec,
    source: Path | None,
    source_sha256: str | None,
    num_classes: int,
) -> tuple[TransferNet, dict | None]:
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
    return model, meta


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
) -> RunResult:
    hooks = hooks or Hooks()
    dev = resolve_device(device)
    info = DATASETS[spec.dataset.value]
    hp = spec.hyperparameters
    augment = info.default_augment if spec.data.augment is None else spec.data.augment
    input_spec = InputSpec.for_dataset(info, spec.data.image_size)

    torch.manual_seed(hp.seed)  # model init, new head, dropout
    model, source_meta = _build_model(spec, source_checkpoint, source_sha256, info.num_classes)
    architecture = Architecture(model.architecture).value
    phases = plan_phases(spec, architecture)
    numerics = resolve_numerics(dev, hp.precision)
    model.to(dev, memory_format=torch.channels_last)  # inputs follow (engine/numerics.py)
    generator = torch.Generator().manual_seed(hp.seed)  # shuffling, on the CPU
    # Augmentation draws come from a generator on the training device: a CPU one would make every
    # CUDA batch wait for a host-to-device copy of its random numbers.
    augment_generator = torch.Generator(device=dev).manual_seed(hp.seed)

    with PeakMemory(dev) as memory:
        data = _load_data(spec, Path(data_root), download, dev)
        feature_cache_bytes = _feature_cache_bytes(dev, feature_cache_bytes)
        steps = steps_per_epoch(data.train[1].shape[0], hp.batch_size)
        total_steps = sum(p.epochs for p in phases) * steps
        criterion = nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)

        fingerprint = _spec_fingerprint(spec, source_sha256, numerics.precision)
        resume_dir = Path(workdir) / "resume"
        state = load_state(resume_dir)
        if state is not None and state["fingerprint"] != fingerprint:
            state = None  # a different spec ran in this folder: start over rather than mix runs
        done = state["epoch"] if state else 0
        epochs: list[EpochMetrics] = [EpochMetrics(**m) for m in state["epochs"]] if state else []
        train_watch = Stopwatch(dev)
        train_watch.seconds = state["train_seconds"] if state else 0.0
        updates = state["parameter_updates"] if state else 0
        if state:
            model.load_state_dict({k: v.to(dev) for k, v in state["model"].items()})
            generator.set_state(state["generator"])
            augment_generator.set_state(state["augment_generator"])
            torch.set_rng_state(state["torch_rng"])

        last_save = time.monotonic()
        hooks.on_start(RunInfo(str(dev), sum(p.epochs for p in phases), done, steps, numerics.precision))
        trainable = 0
        epoch = 0
        forward = sources = None
        for phase in phases:
            first, last = epoch + 1, epoch + phase.epochs
            epoch = last
            apply_freeze(model, phase.frozen_blocks)
            trainable = max(trainable, count_parameters(model, trainable_only=True))
            if done >= last:
                continue
            with train_watch:
                sources = _sources(model, phase, data, input_spec, augment, feature_cache_bytes, numerics)
            forward = _suffix(model, phase.frozen_blocks)
            groups = param_groups(model, phase.frozen_blocks, hp.lr, phase.extractor_lr_factor)
            optimizer = make_optimizer(groups, hp)
            scheduler = make_scheduler(optimizer, hp, phase.epochs * steps)
            if state and first <= done < last:  # resume inside this phase
                optimizer.load_state_dict(state["optimizer"])
                if scheduler is not None and state["scheduler"] is not None:
                    scheduler.load_state_dict(state["scheduler"])
            for e in range(max(first, done + 1), last + 1):
                set_train_mode(model, phase.frozen_blocks)
                progress_base = (e - 1) * steps
                counter = iter(range(1, steps + 1))

                def progress(base=progress_base, counter=counter) -> float:
                    return (base + next(counter)) / max(total_steps, 1)

                with train_watch:
                    totals = train_epoch(
                        sources[0],
                        forward,
                        optimizer,
                        scheduler,
                        criterion,
                        hp.batch_size,
                        generator,
                        augment_generator,
                        numerics,
                        hooks,
                        progress,
                    )
                    lr = optimizer.param_groups[-1]["lr"]
                    row = [
                        EpochMetrics(
                            e,
                            "train",
                            totals.loss,
                            totals.accuracy,
                            lr,
                            totals.seconds,
                            totals.rows / max(totals.seconds, 1e-9),
                        )
                    ]
                    if len(sources[1]) > 0:
                        model.eval()
                        with Stopwatch(dev) as val_watch:
                            logits = infer_logits(sources[1], forward, hp.batch_size, numerics)
                            val_labels = data.val[1].cpu()
                            val_loss = float(criterion(logits, val_labels))
                            val_acc = float((logits.argmax(1) == val_labels).float().mean())
                        row.append(
                            EpochMetrics(
                                e,
                                "val",
                                val_loss,
                                val_acc,
                                lr,
                                val_watch.seconds,
                                len(sources[1]) / max(val_watch.seconds, 1e-9),
                            )
                        )
                updates += count_parameters(model, trainable_only=True) * steps
                epochs.extend(row)
                if e == last or time.monotonic() - last_save >= resume_every_seconds:
                    last_save = time.monotonic()
                    save_state(
                        resume_dir,
                        {
                            "fingerprint": fingerprint,
                            "epoch": e,
                            "epochs": [m.to_dict() for m in epochs],
                            "train_seconds": train_watch.seconds,
                            "parameter_updates": updates,
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler is not None else None,
                            "generator": generator.get_state(),
                            "augment_generator": augment_generator.get_state(),
                            "torch_rng": torch.get_rng_state(),
                        },
                    )
                hooks.on_epoch(row)

        # The test split is used once, here, with the last phase's inputs (cached features if any).
        last_phase = phases[-1]
        if forward is None:  # every epoch had finished before a resume: rebuild the last phase's path
            apply_freeze(model, last_phase.frozen_blocks)
            sources = _sources(model, last_phase, data, input_spec, augment, feature_cache_bytes, numerics)
            forward = _suffix(model, last_phase.frozen_blocks)
        model.eval()
        with Stopwatch(dev) as eval_watch:
            logits = infer_logits(sources[2], forward, hp.batch_size, numerics)
            evaluation = evaluate_predictions(logits, data.test[1].cpu(), data.class_names, data.test_indices)
        apply_freeze(model, 0)

        meta = {
            "architecture": architecture,
            "num_classes": info.num_classes,
            "class_names": list(data.class_names),
            "input": input_spec.to_dict(),
            "dataset": spec.dataset.value,
            "kind": spec.kind,
            "strategy": getattr(spec, "strategy", None) and spec.strategy.value,
            "frozen_blocks": last_phase.frozen_blocks
            if getattr(spec, "strategy", None) == "partial"
            else None,
            "random_init": getattr(spec, "random_init", False),
            "source_sha256": source_meta and source_meta.get("sha256"),
            "hyperparameters": hp.model_dump(mode="json"),
            "precision": numerics.precision,
            "data": spec.data.model_dump(mode="json"),
            "test_accuracy": evaluation.accuracy,
        }
        checkpoint = save_checkpoint(model, meta, Path(checkpoint_dir))
        peak = memory.read()

    cost = Cost(
        train_seconds=train_watch.seconds,
        eval_seconds=eval_watch.seconds,
        trainable_parameters=trainable,
        total_parameters=count_parameters(model),
        parameter_updates=updates,
        peak_memory_bytes=peak,
        memory_device=memory.where,
    )
    del sources, data, forward
    release_memory(dev)
    return RunResult(epochs, evaluation, cost, checkpoint, device=str(dev), precision=numerics.precision)


def release_memory(device: torch.device) -> None:
    """Give cached device memory back after a job (or a cancelled one) so the next job starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
