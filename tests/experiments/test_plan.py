"""Planning: strategies x frozen_blocks x sweep grid, a control for every fine-tune, and the checks
that name the wrong field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.experiments.plan import PlanError, check_request, count_jobs, plan_finetunes
from core.experiments.schemas import MAX_EXPERIMENT_JOBS, ExperimentCreate

PRETRAIN = {"dataset": "stl10", "model": "simple_cnn"}


def request(**fields) -> ExperimentCreate:
    values = {"name": "t", "pretrain": PRETRAIN, "hyperparameters": {"epochs": 2}}
    values.update(fields)
    return ExperimentCreate.model_validate(values)


def test_the_default_is_the_seeds_three_strategies_each_with_a_control():
    jobs = plan_finetunes(request(), "simple_cnn")

    assert [(j.role, j.variant) for j in jobs] == [
        ("finetune", "linear"), ("control", "linear"),
        ("finetune", "partial-2"), ("control", "partial-2"),  # simple_cnn has 4 blocks: half frozen
        ("finetune", "full"), ("control", "full"),
    ]  # fmt: skip
    assert count_jobs(request()) == len(jobs) + 1  # and the pre-train


def test_a_control_is_its_fine_tune_from_random_weights_with_identical_hyperparameters():
    jobs = plan_finetunes(request(sweep={"lr": [0.01, 0.001]}), "simple_cnn")

    for finetune, control in zip(jobs[::2], jobs[1::2], strict=True):
        assert finetune.role == "finetune" and control.role == "control"
        assert finetune.spec.random_init is False and control.spec.random_init is True
        assert control.spec.model_dump(exclude={"random_init"}) == finetune.spec.model_dump(
            exclude={"random_init"}
        )


def test_the_sweep_is_crossed_into_a_grid_for_every_strategy_variant():
    req = request(
        strategies=["linear", "partial", "full"],
        frozen_blocks=[1, 3],
        sweep={"lr": [0.01, 0.001], "batch_size": [32, 64], "optimizer": ["adam", "rmsprop", "sgd"]},
    )
    jobs = plan_finetunes(req, "simple_cnn")

    variants = {j.variant for j in jobs}
    assert variants == {"linear", "partial-1", "partial-3", "full"}
    full = [j.spec.hyperparameters for j in jobs if j.variant == "full" and j.role == "finetune"]
    grid = {(hp.optimizer.value, hp.lr, hp.batch_size) for hp in full}
    assert len(grid) == 12
    assert len(jobs) == 4 * 12 * 2
    assert count_jobs(req) == 4 * 12 * 2 + 1


def test_the_sweep_keeps_the_base_hyperparameters_it_does_not_sweep():
    jobs = plan_finetunes(
        request(hyperparameters={"epochs": 3, "weight_decay": 0.01}, sweep={"lr": [0.1]}), "simple_cnn"
    )

    assert {(j.spec.hyperparameters.epochs, j.spec.hyperparameters.weight_decay, j.spec.hyperparameters.lr)
            for j in jobs} == {(3, 0.01, 0.1)}  # fmt: skip


def test_without_controls_only_fine_tunes_are_planned():
    jobs = plan_finetunes(request(controls=False, strategies=["linear", "lp_ft"]), "simple_cnn")

    assert [(j.role, j.variant) for j in jobs] == [("finetune", "linear"), ("finetune", "lp_ft")]


def test_a_reused_pretrain_adds_no_job():
    assert count_jobs(request(pretrain=None, pretrained_job="abc")) == 6


@pytest.mark.parametrize(
    "fields",
    [{"pretrain": None}, {"pretrained_job": "abc"}],
    ids=["neither", "both"],
)
def test_exactly_one_of_pretrain_and_pretrained_job_is_required(fields):
    with pytest.raises(PlanError) as caught:
        check_request(request(**fields))

    assert caught.value.loc == ("pretrained_job",)
    assert "exactly one of 'pretrain'" in str(caught.value)


def test_frozen_blocks_without_partial_is_refused_by_name():
    with pytest.raises(PlanError) as caught:
        check_request(request(strategies=["linear"], frozen_blocks=[1]))

    assert caught.value.loc == ("frozen_blocks",)


def test_a_grid_over_the_job_limit_is_refused_and_says_how_many_it_needs():
    req = request(
        frozen_blocks=[1, 2, 3],
        sweep={"lr": [0.1, 0.01, 0.001, 0.0001], "batch_size": [32, 64], "optimizer": ["adam", "sgd"]},
    )
    with pytest.raises(PlanError) as caught:
        check_request(req)

    assert caught.value.loc == ("sweep",)
    assert f"needs {5 * 16 * 2 + 1} jobs" in str(caught.value)
    assert f"at most {MAX_EXPERIMENT_JOBS}" in str(caught.value)


def test_frozen_blocks_beyond_the_architecture_names_the_offending_value():
    with pytest.raises(PlanError) as caught:
        plan_finetunes(request(frozen_blocks=[1, 4]), "simple_cnn")

    assert caught.value.loc == ("frozen_blocks", 1)
    assert "allowed 1..3" in str(caught.value)


def test_lp_ft_with_one_epoch_names_the_epochs_field():
    with pytest.raises(PlanError) as caught:
        plan_finetunes(request(strategies=["lp_ft"], hyperparameters={"epochs": 1}), "simple_cnn")

    assert caught.value.loc == ("hyperparameters", "epochs")


def test_a_plan_error_echoes_the_value_of_the_field_it_names():
    with pytest.raises(PlanError) as caught:
        plan_finetunes(request(strategies=["lp_ft"], hyperparameters={"epochs": 1}), "simple_cnn")

    assert caught.value.as_error()["input"] == 1


def test_nesterov_with_a_swept_optimiser_other_than_sgd_names_nesterov():
    req = request(hyperparameters={"epochs": 2, "nesterov": True}, sweep={"optimizer": ["sgd", "rmsprop"]})

    with pytest.raises(PlanError) as caught:
        plan_finetunes(req, "simple_cnn")

    assert caught.value.loc == ("hyperparameters", "nesterov") and "sgd" in str(caught.value)


def test_a_pretrain_spec_the_engine_refuses_is_refused_by_name():
    pretrain = {**PRETRAIN, "hyperparameters": {"optimizer": "adam", "nesterov": True}}

    with pytest.raises(PlanError) as caught:
        check_request(request(pretrain=pretrain))

    assert caught.value.loc == ("pretrain", "hyperparameters", "nesterov")
    assert caught.value.value is True


def test_each_frozen_blocks_value_takes_the_bound_of_the_spec():
    with pytest.raises(ValidationError) as caught:
        request(frozen_blocks=[1, -1])

    assert [e["loc"] for e in caught.value.errors()] == [("frozen_blocks", 1)]


@pytest.mark.parametrize(
    "sweep, field",
    [
        ({"lr": [0]}, "lr"),
        ({"lr": [0.1, 0.1]}, "lr"),
        ({"batch_size": [0]}, "batch_size"),
        ({"optimizer": ["lbfgs"]}, "optimizer"),
        ({"lr": []}, "lr"),
        ({"momentum": [0.9]}, "momentum"),
    ],
)
def test_sweep_values_take_the_bounds_of_the_hyperparameters(sweep, field):
    with pytest.raises(ValidationError) as caught:
        request(sweep=sweep)

    assert field in {str(part) for e in caught.value.errors() for part in e["loc"]}
