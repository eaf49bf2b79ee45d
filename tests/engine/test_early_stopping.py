"""hyperparameters.early_stopping_patience: the last phase ends after that many epochs without a better
validation accuracy, and the test split and the checkpoint get the best epoch's weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import engine.run as run_module
from engine.early_stopping import EarlyStopping
from engine.errors import SpecError
from engine.results import EpochMetrics
from engine.run import run_job, validate_spec
from engine.spec import FinetuneSpec, PretrainSpec
from tests.engine.training_helpers import DEVICE


def test_the_patience_counts_epochs_since_the_best_and_restores_its_weights():
    model = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(patience=2)
    weights_at = {}
    stops = []
    for epoch, accuracy in enumerate([0.5, 0.7, 0.6, 0.7, 0.65], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)  # each epoch's weights are told apart by their value
        weights_at[epoch] = model.weight.clone()
        stops.append(stopper.update(epoch, accuracy, model))

    assert stops == [False, False, False, True, True]  # epoch 4 ties 0.7: not better, so it counts
    assert stopper.restore_best(model) == 2
    assert torch.equal(model.weight, weights_at[2])


def test_the_stopper_state_survives_a_round_trip():
    model = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(patience=1)
    stopper.update(1, 0.8, model)
    stopper.update(2, 0.1, model)
    again = EarlyStopping(patience=1)
    again.load_state(stopper.to_state())
    assert again.stopped and again.best is not None and again.best.epoch == 1


def _scripted_validation(monkeypatch, accuracies: list[float], weights: dict[int, dict]):
    """_validate reports these accuracies in turn and records the model's weights at each epoch."""
    real = run_module._validate

    def validate(job, inputs, epoch, lr):
        row = real(job, inputs, epoch, lr)
        weights[epoch] = {k: v.detach().clone().cpu() for k, v in job.model.state_dict().items()}
        return EpochMetrics(epoch, "val", row.loss, accuracies[epoch - 1], lr, row.seconds, 1.0)

    monkeypatch.setattr(run_module, "_validate", validate)


def _pretrain(patience: int | None, epochs: int = 6) -> PretrainSpec:
    return PretrainSpec(
        dataset="mnist",
        model="simple_cnn",
        hyperparameters={
            "epochs": epochs,
            "batch_size": 16,
            "lr": 0.01,
            "early_stopping_patience": patience,
        },
        data={"image_size": 16, "train_samples": 40, "test_samples": 20, "val_fraction": 0.25},
    )


def test_a_run_stops_after_the_patience_and_its_checkpoint_holds_the_best_epoch(
    monkeypatch, tiny_data_root, tmp_path
):
    weights: dict[int, dict] = {}
    _scripted_validation(monkeypatch, [0.3, 0.6, 0.5, 0.55, 0.58, 0.9], weights)

    result = run_job(
        _pretrain(patience=3),
        data_root=tiny_data_root,
        workdir=tmp_path / "work",
        checkpoint_dir=tmp_path / "ckpt",
        device=DEVICE,
    )

    assert [m.epoch for m in result.epochs if m.phase == "train"] == [1, 2, 3, 4, 5]  # 6 never ran
    saved = load_file(str(result.checkpoint.directory / "model.safetensors"))
    for key, value in weights[2].items():
        if value.is_floating_point():
            assert torch.equal(saved[key], value), key
    # ... and not the last epoch's, which trained on after the best (so the restore mattered).
    assert any(not torch.equal(saved[k], v) for k, v in weights[5].items() if v.is_floating_point())

    # Run again in the same folder: the resume state says it had stopped, so nothing trains again.
    again = run_job(
        _pretrain(patience=3),
        data_root=tiny_data_root,
        workdir=tmp_path / "work",
        checkpoint_dir=tmp_path / "ckpt-again",
        device=DEVICE,
    )
    assert [m.epoch for m in again.epochs if m.phase == "train"] == [1, 2, 3, 4, 5]
    assert again.evaluation.accuracy == result.evaluation.accuracy


def test_without_patience_every_epoch_runs(monkeypatch, tiny_data_root, tmp_path):
    _scripted_validation(monkeypatch, [0.9, 0.1, 0.1], {})
    result = run_job(
        _pretrain(patience=None, epochs=3),
        data_root=tiny_data_root,
        workdir=tmp_path / "work",
        checkpoint_dir=tmp_path / "ckpt",
        device=DEVICE,
    )
    assert [m.epoch for m in result.epochs if m.phase == "train"] == [1, 2, 3]


def test_lp_ft_stops_early_only_in_its_full_fine_tune(monkeypatch, tiny_data_root, tmp_path, source):
    # Epochs 1-2 are the probe (its accuracies fall, which would stop it with patience 1), 3-6 the full.
    _scripted_validation(monkeypatch, [0.9, 0.1, 0.5, 0.4, 0.3, 0.2], {})
    spec = FinetuneSpec(
        dataset="mnist",
        strategy="lp_ft",
        hyperparameters={"epochs": 6, "batch_size": 16, "linear_probe_fraction": 0.34,
                         "early_stopping_patience": 1},
        data={"image_size": 16, "train_samples": 40, "test_samples": 20, "val_fraction": 0.25},
    )  # fmt: skip
    result = run_job(
        spec,
        data_root=tiny_data_root,
        workdir=tmp_path / "work",
        checkpoint_dir=tmp_path / "ckpt",
        source_checkpoint=source.checkpoint.directory,
        source_sha256=source.checkpoint.sha256,
        device=DEVICE,
    )
    assert [m.epoch for m in result.epochs if m.phase == "train"] == [1, 2, 3, 4]


def test_early_stopping_without_a_validation_split_is_refused_naming_the_field():
    spec = _pretrain(patience=2).model_copy(
        update={"data": _pretrain(patience=2).data.model_copy(update={"val_fraction": 0.0})}
    )
    with pytest.raises(SpecError) as refused:
        validate_spec(spec, "simple_cnn")
    assert refused.value.field == "hyperparameters.early_stopping_patience"
    assert "val_fraction" in str(refused.value)
