"""POST /experiments within the work budgets: every preset fits the defaults; an experiment over its
work limits is a 422 naming the limit and the estimate, one whose jobs would pass
TRANSFERLAB_MAX_ACTIVE_JOBS a 429 with Retry-After, counting the fine-tunes it creates later; neither
writes anything."""

from __future__ import annotations

import pytest

from core.budgets import RETRY_AFTER_SECONDS
from core.experiments.presets import PRESETS
from core.models import Experiment, Job, JobStatus
from tests.experiments.conftest import body

# A pre-train the size of the quick preset's: 1 job now, 6 fine-tunes and controls once it succeeds.
PRETRAIN = {
    "dataset": "stl10",
    "model": "simple_cnn",
    "hyperparameters": {"epochs": 1},
    "data": {"image_size": 32},
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_accepted_under_the_default_limits(client, name):
    response = client.post("/experiments", json=PRESETS[name])
    assert response.status_code == 202, response.text


def test_an_experiment_over_max_experiment_work_is_a_422_naming_the_limit_and_the_total(
    env, client, pretrained, count_rows
):
    env(MAX_EXPERIMENT_WORK=1e14)  # each of its 18 jobs is about 1e13
    response = client.post(
        "/experiments", json=body(pretrained_job=pretrained.id, sweep={"lr": [0.1, 0.01, 0.001]})
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "sweep"] and error["input"]["lr"] == [0.1, 0.01, 0.001]
    assert "over its 18 jobs is over TRANSFERLAB_MAX_EXPERIMENT_WORK=1e+14" in error["msg"]
    assert "estimated work 1.88e+14 FLOPs" in error["msg"]
    assert (count_rows(Experiment), count_rows(Job)) == (0, 1)  # the reused pre-train alone


def test_an_experiment_with_a_job_over_max_job_work_is_a_422_naming_that_job(client, count_rows):
    pretrain = {**PRETRAIN, "hyperparameters": {"epochs": 1000}, "data": {"image_size": 512}}
    response = client.post("/experiments", json=body(pretrain=pretrain))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "pretrain", "hyperparameters", "epochs"]
    assert (
        error["msg"].startswith("the pre-train: estimated work")
        and "TRANSFERLAB_MAX_JOB_WORK" in error["msg"]
    )
    assert (count_rows(Experiment), count_rows(Job)) == (0, 0)


def test_a_fine_tune_over_max_job_work_is_named_by_its_variant(client, pretrained):
    response = client.post(
        "/experiments",
        json=body(pretrained_job=pretrained.id, hyperparameters={"epochs": 1000}, data={"image_size": 96}),
    )
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "hyperparameters", "epochs"]
    assert error["msg"].startswith("finetune linear (lr 0.001, batch 128, adam): estimated work")


def test_past_max_active_jobs_an_experiment_is_a_429_counting_the_jobs_it_would_create(
    env, client, make_job, count_rows, enqueued
):
    env(MAX_ACTIVE_JOBS=10)
    for _ in range(4):
        make_job(status=JobStatus.queued)
    response = client.post("/experiments", json=body(pretrain=PRETRAIN))  # 1 now + 6 later: 11 > 10
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert "7 more would pass TRANSFERLAB_MAX_ACTIVE_JOBS=10 (room for 6)" in response.json()["detail"]
    assert (count_rows(Experiment), count_rows(Job), enqueued) == (0, 4, [])


def test_the_fine_tunes_an_experiment_will_create_count_against_max_active_jobs(env, client, count_rows):
    env(MAX_ACTIVE_JOBS=10)
    assert client.post("/experiments", json=body(pretrain=PRETRAIN)).status_code == 202  # 1 row, 7 counted
    response = client.post("/experiments", json=body(pretrain=PRETRAIN))
    assert response.status_code == 429
    assert (count_rows(Experiment), count_rows(Job)) == (1, 1)
