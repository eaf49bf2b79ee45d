"""Helpers for the engine's training tests: tiny runs on the tiny data root, on the CPU unless
TRANSFERLAB_TEST_DEVICE says otherwise (bench/gpu.sh runs them with cuda on the GPU machine)."""

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.checkpoint import WEIGHTS_FILE
from engine.results import Hooks
from engine.run import run_job
from engine.spec import FinetuneSpec, PretrainSpec

DEVICE = os.environ.get("TRANSFERLAB_TEST_DEVICE", "cpu")
SMALL = {"image_size": 16, "val_fraction": 0.2}


class Recorder(Hooks):
    def __init__(self, stop_after_batches: int | None = None):
        self.epochs, self.progress, self.starts = [], [], []
        self.stop_after = stop_after_batches

    def on_start(self, info):
        self.starts.append(info)

    def on_epoch(self, metrics):
        self.epochs.append(metrics)

    def on_progress(self, fraction):
        self.progress.append(fraction)

    def should_stop(self):
        return self.stop_after is not None and len(self.progress) >= self.stop_after


class StopAtPoll(Recorder):
    """Stops at the nth poll of should_stop (never when n is None), noting for every poll whether
    autograd was on: off inside inference (feature caching, validation, test), on elsewhere."""

    def __init__(self, n: int | None = None):
        super().__init__()
        self.stop_at, self.grad_enabled_at_polls = n, []

    def should_stop(self):
        self.grad_enabled_at_polls.append(torch.is_grad_enabled())
        return self.stop_at is not None and len(self.grad_enabled_at_polls) >= self.stop_at


def pretrain(root: Path, tmp: Path, name: str = "src", **hyper) -> object:
    spec = PretrainSpec(
        dataset="stl10",
        model="simple_cnn",
        hyperparameters={"epochs": 2, "batch_size": 32, **hyper},
        data=SMALL,
    )
    return run_job(
        spec,
        data_root=root,
        workdir=tmp / name / "work",
        checkpoint_dir=tmp / name / "ckpt",
        device=DEVICE,
    )


def finetune(root, tmp, source, name="ft", hooks=None, cache_bytes=None, **fields):
    hyper = {"epochs": 2, "batch_size": 32, **fields.pop("hyperparameters", {})}
    spec = FinetuneSpec(dataset="mnist", hyperparameters=hyper, data=SMALL, **fields)
    extra = {"resume_every_seconds": 0}  # a state every epoch: the resume test stops mid-run
    if cache_bytes is not None:
        extra["feature_cache_bytes"] = cache_bytes
    return run_job(
        spec,
        data_root=root,
        workdir=tmp / name / "work",
        checkpoint_dir=tmp / name / "ckpt",
        source_checkpoint=source.checkpoint.directory,
        source_sha256=source.checkpoint.sha256,
        hooks=hooks,
        device=DEVICE,
        **extra,
    )


def weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.checkpoint.directory / WEIGHTS_FILE))
