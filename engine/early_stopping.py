"""Early stopping on validation accuracy, keeping the best epoch's weights to evaluate.

`hyperparameters.early_stopping_patience` epochs without a better validation accuracy end the run's
last phase; the weights of the best epoch (the first of equals) are then loaded back before the test
split is read, as Keras' `restore_best_weights` and most training scripts do. Only the last phase
stops early: an lp_ft's linear probe always hands its planned epochs to the full fine-tune, so the
epoch numbers of a run stay those of its plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class BestEpoch:
    epoch: int
    accuracy: float
    weights: dict[str, torch.Tensor]  # copies on the CPU: the model trains on after this epoch

    def to_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "accuracy": self.accuracy, "weights": self.weights}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> BestEpoch | None:
        if state is None:
            return None
        return cls(int(state["epoch"]), float(state["accuracy"]), dict(state["weights"]))


@dataclass
class EarlyStopping:
    patience: int
    best: BestEpoch | None = None
    stopped: bool = False  # the patience ran out: no more epochs

    def update(self, epoch: int, val_accuracy: float, model: nn.Module) -> bool:
        """After a validated epoch: keep its weights when they are the best so far; True when the
        patience has run out and training should end now."""
        if self.best is None or val_accuracy > self.best.accuracy:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self.best = BestEpoch(epoch, val_accuracy, weights)
        elif epoch - self.best.epoch >= self.patience:
            self.stopped = True
        return self.stopped

    def restore_best(self, model: nn.Module) -> int | None:
        """Load the best epoch's weights into the model; that epoch, or None when none was validated."""
        if self.best is None:
            return None
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in self.best.weights.items()})
        return self.best.epoch

    def to_state(self) -> dict[str, Any]:
        return {"best": self.best.to_state() if self.best else None, "stopped": self.stopped}

    def load_state(self, state: dict[str, Any] | None) -> None:
        if state is not None:
            self.best = BestEpoch.from_state(state["best"])
            self.stopped = bool(state["stopped"])
