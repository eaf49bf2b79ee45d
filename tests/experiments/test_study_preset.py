"""The CPU study preset (issue #11): all of MNIST for every strategy, 3 seeds, the pixels baseline,
layer probes and the transferability curve, with linear probes that stop on validation, within the
work budgets; and its smoke-size twin with every option."""

from __future__ import annotations

from core import budgets
from core.experiments.plan import linear_epochs, plan_finetunes
from core.experiments.presets import PRESETS
from core.experiments.schemas import ExperimentCreate
from core.settings import Settings


def study() -> ExperimentCreate:
    return ExperimentCreate.model_validate(PRESETS["study"])


def test_the_study_uses_every_mnist_training_image_for_every_strategy_at_three_seeds():
    request = study()
    planned = plan_finetunes(request, "simple_cnn")

    assert request.data.train_samples is None and request.data.test_samples is None
    assert all(j.spec.data.train_samples is None for j in planned)
    assert {j.spec.hyperparameters.seed for j in planned} == {0, 1, 2}
    assert {j.variant for j in planned} == {
        "linear", "partial-1", "partial-2", "partial-3", "full", "pixels",
        "probe-0", "probe-1", "probe-2", "probe-3",
    }  # fmt: skip


def test_the_studys_linear_probes_run_longer_and_stop_on_validation():
    request = study()
    linear = [
        j for j in plan_finetunes(request, "simple_cnn") if j.variant in ("linear", "pixels", "probe-0")
    ]

    assert linear_epochs(request) > request.hyperparameters.epochs
    for job in linear:
        assert job.spec.hyperparameters.epochs == linear_epochs(request)
        assert job.spec.hyperparameters.early_stopping_patience is not None
        assert job.spec.data.val_fraction > 0


def test_the_study_fits_the_default_work_budgets():
    request = study()
    planned = plan_finetunes(request, "simple_cnn")

    assert budgets.check_experiment(request, planned, "simple_cnn", Settings()) == len(planned) + 1


def test_a_probe_is_estimated_as_one_forward_pass_and_a_linear_layer():
    planned = plan_finetunes(study(), "simple_cnn")
    probe = next(j.spec for j in planned if j.variant == "probe-3")
    full = next(j.spec for j in planned if j.variant == "full")

    probe_work = budgets.estimate_job(probe, "simple_cnn").work
    # The probe's 10 epochs cost less than one epoch of the full fine-tune's training.
    assert probe_work < budgets.estimate_job(full, "simple_cnn").train_work / full.hyperparameters.epochs
    cache = 60_000 * budgets.PROBE_MAX_FEATURES * 4
    assert cache < budgets.estimate_job(probe, "simple_cnn").peak_memory_bytes < cache + 2**28


def test_the_seed_scale_study_has_the_studys_options_on_resnet18_at_96_px():
    request = ExperimentCreate.model_validate(PRESETS["seed-study"])
    planned = plan_finetunes(request, "resnet18")

    assert request.pretrain is not None and request.pretrain.model.value == "resnet18"
    assert request.data.image_size == 96 and request.data.train_samples is None
    assert (request.repeats, request.layer_probes, request.transferability) == (3, True, True)
    assert {j.spec.hyperparameters.seed for j in planned} == {0, 1, 2}
    assert {j.spec.hyperparameters.lr for j in planned if j.variant == "full"} == {0.01, 0.001}
    assert {j.variant for j in planned} == {
        "linear", "partial-1", "partial-2", "partial-3", "partial-4", "full", "pixels",
        "probe-0", "probe-1", "probe-2", "probe-3", "probe-4",
    }  # fmt: skip
    assert budgets.check_experiment(request, planned, "resnet18", Settings()) == len(planned) + 1 <= 128
