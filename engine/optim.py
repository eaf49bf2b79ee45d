"""Optimiser and learning-rate schedule from the hyperparameters. Schedules step once per batch."""

from __future__ import annotations

from torch import optim

from engine.errors import SpecError
from engine.spec import Hyperparameters, OptimizerName, SchedulerName

# SGD without momentum crawls; RMSprop with 0.9 momentum at Adam-like learning rates diverged in our
# tests (lr 0.01 on a linear probe): each gets its own usual value unless one is given.
DEFAULT_MOMENTUM = {OptimizerName.sgd: 0.9, OptimizerName.rmsprop: 0.0}


def make_optimizer(groups: list[dict], hp: Hyperparameters) -> optim.Optimizer:
    momentum = hp.momentum if hp.momentum is not None else DEFAULT_MOMENTUM.get(hp.optimizer, 0.0)
    if hp.nesterov and (hp.optimizer != OptimizerName.sgd or momentum == 0):
        raise SpecError("hyperparameters.nesterov", "needs optimizer 'sgd' with momentum > 0")
    if hp.optimizer == OptimizerName.adam:
        return optim.Adam(groups, weight_decay=hp.weight_decay)
    if hp.optimizer == OptimizerName.adamw:
        return optim.AdamW(groups, weight_decay=hp.weight_decay)
    if hp.optimizer == OptimizerName.rmsprop:
        return optim.RMSprop(groups, momentum=momentum, weight_decay=hp.weight_decay)
    return optim.SGD(groups, momentum=momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay)


def make_scheduler(
    optimizer: optim.Optimizer, hp: Hyperparameters, total_steps: int
) -> optim.lr_scheduler.LRScheduler | None:
    total_steps = max(1, total_steps)
    if hp.scheduler == SchedulerName.cosine:
        return optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if hp.scheduler == SchedulerName.step:
        # Multiply by step_gamma at each third of training (torchvision's references use epoch 30/60/90).
        return optim.lr_scheduler.StepLR(optimizer, step_size=max(1, total_steps // 3), gamma=hp.step_gamma)
    if hp.scheduler == SchedulerName.onecycle:
        peaks = [g["lr"] for g in optimizer.param_groups]
        # +1: the schedule is stepped after the last batch too, which must not run past its end.
        return optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total_steps + 1)
    return None
