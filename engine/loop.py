"""The training loop: batches come from whole tensors on the device, never from a DataLoader.

A source turns a batch of row indices into model inputs. `ImageSource` preprocesses uint8 images on
the device (and runs a frozen prefix of the model without autograd); `TensorSource` serves inputs that
were computed once (a frozen extractor's features: same every epoch when nothing is augmented).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from engine.cost import Stopwatch
from engine.errors import JobCancelled
from engine.numerics import Numerics
from engine.preprocess import InputSpec, prepare_batch
from engine.results import Hooks

Forward = Callable[[torch.Tensor], torch.Tensor]
StopCheck = Callable[[], bool]  # Hooks.should_stop: True when the run must end now


def stop_if_asked(should_stop: StopCheck) -> None:
    """Raise JobCancelled when the hooks ask the run to stop (checked after every batch, before writes)."""
    if should_stop():
        raise JobCancelled("stopped at the hooks' request")


class ImageSource:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        spec: InputSpec,
        augment: bool,
        numerics: Numerics,
        prefix: Forward | None = None,
    ):
        self.images, self.labels, self.spec, self.augment = images, labels, spec, augment
        self.numerics, self.prefix = numerics, prefix

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(
        self, index: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = prepare_batch(self.images[index], self.spec, augment=self.augment, generator=generator)
        x = self.numerics.inputs(x)
        if self.prefix is not None:
            with torch.no_grad(), self.numerics.autocast():
                x = self.prefix(x)
        return x, self.labels[index]

    @property
    def device(self) -> torch.device:
        return self.images.device


class TensorSource:
    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(
        self, index: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.labels[index]


Source = ImageSource | TensorSource


@torch.no_grad()
def precompute(source: ImageSource, batch_size: int, should_stop: StopCheck) -> TensorSource:
    """Run the source's frozen prefix once over every row (un-augmented) and keep the outputs.

    should_stop is polled after every batch: caching a whole split is a long stretch with no training
    batch (and so no other poll) in it."""
    assert not source.augment, "augmented inputs differ every epoch and cannot be cached"
    parts = []
    for start in range(0, len(source), batch_size):
        index = torch.arange(start, min(start + batch_size, len(source)), device=source.device)
        parts.append(source.batch(index, None)[0])
        stop_if_asked(should_stop)
    if not parts:  # an empty split (val_fraction 0): no rows, but outputs of the prefix's shape
        parts.append(source.batch(torch.arange(0, device=source.device), None)[0])
    return TensorSource(torch.cat(parts), source.labels)


def steps_per_epoch(rows: int, batch_size: int) -> int:
    # A last batch of one row is dropped: BatchNorm cannot train on a single sample.
    steps = math.ceil(rows / batch_size)
    return steps - 1 if rows % batch_size == 1 and steps > 1 else steps


@dataclass
class EpochTotals:
    loss: float
    accuracy: float
    seconds: float
    rows: int


def train_epoch(
    source: Source,
    forward: Forward,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    criterion: nn.Module,
    batch_size: int,
    generator: torch.Generator,
    augment_generator: torch.Generator,
    numerics: Numerics,
    hooks: Hooks,
    progress: Callable[[], float],
) -> EpochTotals:
    rows = len(source)
    device = numerics.device
    order = torch.randperm(rows, generator=generator).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    with Stopwatch(device) as watch:
        for step in range(steps_per_epoch(rows, batch_size)):
            index = order[step * batch_size : (step + 1) * batch_size]
            x, y = source.batch(index, augment_generator)
            with numerics.autocast():
                logits = forward(x)
                loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            # Accumulate on the device: a .item() per batch would stall the GPU pipeline.
            loss_sum += loss.detach() * y.shape[0]
            correct += (logits.argmax(dim=1) == y).sum()
            seen += y.shape[0]
            hooks.on_progress(progress())
            stop_if_asked(hooks.should_stop)
    return EpochTotals(float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1), watch.seconds, seen)


@torch.no_grad()
def infer_logits(
    source: Source, forward: Forward, batch_size: int, numerics: Numerics, should_stop: StopCheck
) -> torch.Tensor:
    """Logits for every row, in order, as float32 on the CPU; should_stop is polled after every batch."""
    parts = []
    for start in range(0, len(source), batch_size):
        index = torch.arange(start, min(start + batch_size, len(source)), device=numerics.device)
        x, _ = source.batch(index, None)
        with numerics.autocast():
            parts.append(forward(x).float().cpu())
        stop_if_asked(should_stop)
    return torch.cat(parts) if parts else torch.empty(0, 0)
