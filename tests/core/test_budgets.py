"""core.budgets: what a job's estimate counts, the limits that refuse it, the presets that fit the
defaults, the count of active jobs, and the time limit a worker gets."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core import budgets
from core.budgets import ARCHITECTURES, TRAIN_FLOPS_OVER_FORWARD, BudgetExceeded, QueueFull
from core.experiments.plan import count_jobs, plan_finetunes
from core.experiments.presets import PRESETS
from core.experiments.schemas import ExperimentCreate
from core.models import Experiment, ExperimentStatus, Job, JobStatus
from engine.spec import Architecture, FinetuneSpec, PretrainSpec

SIMPLE = ARCHITECTURES[Architecture.simple_cnn].forward_flops_per_pixel


def pretrain(**fields) -> PretrainSpec:
    return PretrainSpec.model_validate({"dataset": "stl10", "model": "simple_cnn", **fields})


def finetune(**fields) -> FinetuneSpec:
    return FinetuneSpec.model_validate({"dataset": "mnist", **fields})


# The job: 1000 epochs at batch 4096 and 512 px.
ABUSE = {"hyperparameters": {"epochs": 1000, "batch_size": 4096}, "data": {"image_size": 512}}


def test_work_is_epochs_x_training_images_x_pixels_x_the_factor_plus_evaluation():
    spec = pretrain(hyperparameters={"epochs": 2}, data={"image_size": 32, "train_samples": 1000})
    estimate = budgets.estimate_job(spec, "simple_cnn")
    assert (estimate.train_images, estimate.val_images, estimate.test_images) == (900, 100, 8000)
    assert estimate.train_work == 2 * 900 * 32 * 32 * SIMPLE * TRAIN_FLOPS_OVER_FORWARD
    assert estimate.eval_work == (2 * 100 + 8000) * 32 * 32 * SIMPLE
    assert estimate.work == estimate.train_work + estimate.eval_work


def test_without_a_train_samples_cap_the_whole_official_split_counts():
    estimate = budgets.estimate_job(finetune(data={"val_fraction": 0.1}), "simple_cnn")
    assert (estimate.train_images, estimate.val_images, estimate.test_images) == (54_000, 6_000, 10_000)


def test_val_fraction_zero_trains_on_every_image_and_validates_none():
    estimate = budgets.estimate_job(finetune(data={"train_samples": 500, "val_fraction": 0}), "simple_cnn")
    assert (estimate.train_images, estimate.val_images) == (500, 0)


def test_lp_ft_counts_the_epochs_of_both_its_phases():
    lp_ft = budgets.estimate_job(finetune(strategy="lp_ft", hyperparameters={"epochs": 4}), "resnet18")
    full = budgets.estimate_job(finetune(strategy="full", hyperparameters={"epochs": 4}), "resnet18")
    assert lp_ft.work == full.work and lp_ft.epochs == 4


def test_a_finetune_costs_what_its_source_architecture_costs():
    spec = finetune()
    ratio = budgets.estimate_job(spec, "vgg11_bn").work / budgets.estimate_job(spec, "simple_cnn").work
    expected = ARCHITECTURES[Architecture.vgg11_bn].forward_flops_per_pixel / SIMPLE
    assert ratio == pytest.approx(expected)


def test_memory_is_batch_x_pixels_x_activations_plus_weights_and_optimiser_state():
    cost = ARCHITECTURES[Architecture.resnet18]
    spec = pretrain(model="resnet18", hyperparameters={"batch_size": 64}, data={"image_size": 96})
    expected = 64 * 96 * 96 * cost.saved_bytes_per_pixel * budgets.PEAK_OVER_SAVED + cost.parameters * 16
    assert budgets.estimate_job(spec, "resnet18").peak_memory_bytes == int(expected)


def test_a_batch_larger_than_the_training_images_costs_one_batch_of_them():
    small = pretrain(hyperparameters={"batch_size": 4096}, data={"train_samples": 100, "val_fraction": 0})
    exact = pretrain(hyperparameters={"batch_size": 100}, data={"train_samples": 100, "val_fraction": 0})
    assert (
        budgets.estimate_job(small, "simple_cnn").peak_memory_bytes
        == budgets.estimate_job(exact, "simple_cnn").peak_memory_bytes
    )


def test_a_job_over_max_job_work_is_refused_naming_the_limit_the_estimate_and_what_to_lower(settings):
    estimate = budgets.estimate_job(pretrain(model="resnet18", **ABUSE), "resnet18")
    with pytest.raises(BudgetExceeded) as refused:
        budgets.check_job(estimate, settings)
    message = str(refused.value)
    assert refused.value.setting == "TRANSFERLAB_MAX_JOB_WORK" and refused.value.estimate == estimate.work
    assert f"{estimate.work:.3g} FLOPs" in message and "TRANSFERLAB_MAX_JOB_WORK=1e+15" in message
    assert "hyperparameters.epochs" in message and refused.value.loc == ("hyperparameters", "epochs")


def test_a_job_over_max_job_memory_bytes_is_refused_naming_the_limit_and_the_batch(settings):
    spec = finetune(
        hyperparameters={"epochs": 1, "batch_size": 4096}, data={"image_size": 256, "train_samples": 5000}
    )
    estimate = budgets.estimate_job(spec, "resnet18")
    assert estimate.work <= settings.max_job_work  # within the work limit: memory alone refuses it
    with pytest.raises(BudgetExceeded) as refused:
        budgets.check_job(estimate, settings)
    assert refused.value.setting == "TRANSFERLAB_MAX_JOB_MEMORY_BYTES"
    assert "TRANSFERLAB_MAX_JOB_MEMORY_BYTES=17179869184" in str(refused.value) and "GiB" in str(
        refused.value
    )
    assert refused.value.loc == ("hyperparameters", "batch_size") and refused.value.value == 4096


def plan(name: str) -> tuple[ExperimentCreate, list]:
    request = ExperimentCreate.model_validate(PRESETS[name])
    assert request.pretrain is not None
    return request, plan_finetunes(request, request.pretrain.model.value)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_fits_the_default_limits(settings, name):
    request, planned = plan(name)
    assert budgets.check_experiment(request, planned, request.pretrain.model.value, settings) == count_jobs(
        request
    )


def test_an_experiment_over_max_experiment_work_is_refused_naming_the_total_and_its_heaviest_job(settings):
    request, planned = plan("seed")
    tight = settings.model_copy(update={"max_experiment_work": 1e16})
    with pytest.raises(BudgetExceeded) as refused:
        budgets.check_experiment(request, planned, "resnet18", tight)
    total = sum(job.estimate.work for job in budgets.experiment_estimates(request, planned, "resnet18"))
    assert refused.value.setting == "TRANSFERLAB_MAX_EXPERIMENT_WORK" and refused.value.estimate == total
    assert f"{total:.3g} FLOPs over its 73 jobs" in str(refused.value) and "heaviest" in str(refused.value)
    assert refused.value.loc == ("sweep",)


def test_an_experiment_job_over_a_job_limit_is_named_with_where_it_sits_in_the_body(settings):
    request = ExperimentCreate.model_validate(
        {**PRESETS["quick"], "pretrain": {**PRESETS["quick"]["pretrain"], **ABUSE}}
    )
    with pytest.raises(BudgetExceeded) as refused:
        budgets.check_experiment(request, plan_finetunes(request, "simple_cnn"), "simple_cnn", settings)
    assert str(refused.value).startswith("the pre-train: estimated work")
    assert refused.value.as_error()["loc"] == ("body", "pretrain", "hyperparameters", "epochs")


# ---------------------------------------------------------------- active jobs


def test_active_jobs_are_the_queued_and_running_ones(sessions, make_job):
    for status in (JobStatus.queued, JobStatus.running, JobStatus.succeeded, JobStatus.failed):
        make_job(status)
    with sessions() as session:
        assert budgets.active_jobs(session) == 2


def test_the_fine_tunes_of_an_experiment_still_pretraining_count_as_active(sessions, make_job):
    request = PRESETS["quick"]  # 1 pre-train + 12 fine-tunes and controls
    with sessions() as session:
        status = ExperimentStatus.pretraining
        session.add(
            Experiment(name="q", status=status, request=request, dataset="mnist", architecture="simple_cnn")
        )
        session.commit()
    make_job(JobStatus.queued)  # its pre-train
    with sessions() as session:
        assert budgets.active_jobs(session) == 1 + count_jobs(ExperimentCreate.model_validate(request)) - 1


def test_new_jobs_past_max_active_jobs_are_refused_with_a_retry_after(settings, sessions, make_job):
    make_job(JobStatus.queued)
    make_job(JobStatus.running)
    tight = settings.model_copy(update={"max_active_jobs": 3})
    with sessions() as session:
        budgets.check_capacity(session, tight, new_jobs=1)  # 3 of 3: admitted
        with pytest.raises(QueueFull) as refused:
            budgets.check_capacity(session, tight, new_jobs=2)
        assert session.scalar(select(func.count()).select_from(Job)) == 2
    assert refused.value.retry_after_seconds == budgets.RETRY_AFTER_SECONDS
    assert "TRANSFERLAB_MAX_ACTIVE_JOBS=3" in str(refused.value) and "room for 1" in str(refused.value)


# ---------------------------------------------------------------- time limit


def test_the_time_limit_is_the_estimate_over_the_throughput_floor_times_the_factor(settings):
    estimate = budgets.estimate_job(pretrain(model="resnet18", data={"image_size": 96}), "resnet18")
    limit = budgets.time_limit(estimate, settings)
    expected = estimate.work / settings.job_time_limit_flops_per_second * settings.job_time_limit_factor
    assert expected > settings.job_time_limit_min_seconds and limit.seconds == expected


def test_the_time_limit_is_never_below_its_minimum(settings):
    estimate = budgets.estimate_job(pretrain(data={"image_size": 16, "train_samples": 10}), "simple_cnn")
    assert budgets.time_limit(estimate, settings).seconds == settings.job_time_limit_min_seconds == 600


def test_the_time_limit_reason_names_the_limit_the_estimate_and_the_settings(settings):
    estimate = budgets.estimate_job(pretrain(data={"image_size": 16, "train_samples": 10}), "simple_cnn")
    reason = budgets.time_limit(estimate, settings).reason(ran_seconds=612.4)
    assert reason.startswith("stopped after 612 s: over its time limit of 600 s")
    assert f"{estimate.work:.3g} FLOPs" in reason and "simple_cnn" in reason
    for name in ("FLOPS_PER_SECOND=5e+09", "FACTOR=2", "MIN_SECONDS=600"):
        assert f"TRANSFERLAB_JOB_TIME_LIMIT_{name}" in reason
    assert "Not retried" in reason


def test_the_architecture_factors_are_known_for_every_architecture():
    assert set(ARCHITECTURES) == set(Architecture)


def test_the_smoke_preset_reads_a_few_hundred_images_a_job_whatever_the_data():
    request, planned = plan("smoke")  # uncapped it trained on all of MNIST: 508 s on 2 cores

    estimates = [job.estimate for job in budgets.experiment_estimates(request, planned, "simple_cnn")]

    assert len(estimates) == 13
    assert all(e.train_images + e.val_images <= 500 and e.test_images <= 200 for e in estimates)
