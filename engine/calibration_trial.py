"""The real trial behind engine/calibrate.py: timed training steps of a copy of the job's model, and
the key a machine's choice is cached under.

    run_trial = TrainingStepTrial(model, frozen_blocks=2, images=batch_uint8, labels=y, spec=input_spec,
                                  hyperparameters=hp, device=device)
    run_trial(Candidate("bf16"))        # Trial(seconds_per_step=0.21, loss=2.31, setup_seconds=0.0)

Every candidate starts from the same weights (a deep copy of the job's model, made before it has
trained) and steps on the same batch with the job's optimiser, so the losses of two candidates differ
only by their arithmetic: that is what the bf16 rule compares.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import platform
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from engine.calibrate import TIMED_STEPS, WARMUP_STEPS, Candidate, Trial
from engine.cpu_contention import usable_cpus
from engine.models import TransferNet
from engine.optim import make_optimizer
from engine.preprocess import InputSpec, prepare_batch
from engine.spec import Hyperparameters
from engine.strategies import apply_freeze, param_groups, set_train_mode


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU intra-op threads set for a block and put back after it (None: leave them)."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainingStepTrial:
    """Callable: Candidate -> Trial, on the job's own model, batch and optimiser."""

    def __init__(
        self,
        model: TransferNet,
        *,
        frozen_blocks: int,
        images: torch.Tensor,
        labels: torch.Tensor,
        spec: InputSpec,
        hyperparameters: Hyperparameters,
        device: torch.device,
    ):
        self.initial = copy.deepcopy(model).cpu()  # the untrained weights every candidate starts from
        self.frozen, self.hp, self.device = frozen_blocks, hyperparameters, device
        self.inputs = prepare_batch(images.to(device), spec)
        self.labels = labels.to(device)

    def __call__(self, candidate: Candidate) -> Trial:
        torch.manual_seed(0)  # dropout draws alike in every candidate (the caller forks the RNG)
        fmt = torch.channels_last if candidate.channels_last else torch.contiguous_format
        model = copy.deepcopy(self.initial).to(self.device).to(memory_format=fmt)
        apply_freeze(model, self.frozen)
        set_train_mode(model, self.frozen)
        optimizer = make_optimizer(param_groups(model, self.frozen, self.hp.lr, 1.0), self.hp)
        criterion = nn.CrossEntropyLoss(label_smoothing=self.hp.label_smoothing)
        x = self.inputs.contiguous(memory_format=fmt)
        forward = torch.compile(model) if candidate.compile else model
        dtype = torch.bfloat16 if candidate.precision == "bf16" else None
        seconds, losses = [], []
        with intra_op_threads(candidate.threads):
            for _ in range(WARMUP_STEPS + TIMED_STEPS):
                _sync(self.device)
                start = time.perf_counter()
                autocast = (
                    torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
                )
                with autocast:
                    loss = criterion(forward(x).float(), self.labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))  # synchronises
                _sync(self.device)
                seconds.append(time.perf_counter() - start)
        per_step = statistics.median(seconds[WARMUP_STEPS:])
        # Compilation happens in the first call: its excess over a timed step is paid once per job.
        setup = max(seconds[0] - per_step, 0.0) if candidate.compile else 0.0
        del model, optimizer, forward
        return Trial(per_step, statistics.fmean(losses), setup)


def _cpu_identity() -> dict[str, Any]:
    """The CPU's model name and a digest of its feature flags (AMX, AVX-512 BF16 decide bf16's speed)."""
    model, flags = platform.processor() or platform.machine(), ""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif name.strip() == "flags" and not flags:
                    flags = value.strip()
    cores = len(usable_cpus())
    return {
        "cpu": model,
        "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "cores": cores,
        "threads": torch.get_num_threads(),
    }


def calibration_key(
    device: torch.device,
    *,
    architecture: str,
    image_size: int,
    channels: int,
    batch_size: int,
    frozen_blocks: int,
    optimizer: str,
    candidates: str,
) -> dict[str, Any]:
    """What a cached choice depends on: the machine, torch, and the step being timed."""
    key: dict[str, Any] = {"torch": torch.__version__, **_cpu_identity()}
    if device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
        key["capability"] = list(torch.cuda.get_device_capability(device))
    key.update(
        architecture=architecture,
        image_size=image_size,
        channels=channels,
        batch_size=batch_size,
        frozen_blocks=frozen_blocks,
        optimizer=optimizer,
        candidates=candidates,
    )
    return key
