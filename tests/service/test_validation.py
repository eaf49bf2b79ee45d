"""What POST /jobs and the list routes refuse, and how: never a 500. A 400 for a body that does not
parse, a 422 naming the field for one that breaks a rule, the engine's own rules included (a 202
means the worker will accept the spec)."""

from __future__ import annotations

import pytest

from core.models import Job, JobStatus
from tests.service.test_jobs import PRETRAIN, assert_nothing_created, finetune

JSON = {"content-type": "application/json"}


# ---------------------------------------------------------------- bodies that do not parse: 400


@pytest.mark.parametrize(
    "raw",
    [b'{"kind": "pretrain",', b"not json", b'{"kind": "pretrain", "dataset": "\xff"}'],
    ids=["truncated", "not-json", "not-utf8"],
)
def test_a_body_that_does_not_parse_is_400_with_a_message(client, enqueued, count_rows, raw):
    response = client.post("/jobs", content=raw, headers=JSON)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("the body")
    assert "application/json" in response.json()["detail"]
    assert_nothing_created(count_rows, enqueued)


# ---------------------------------------------------------------- what JSON cannot carry: 422, not 500


@pytest.mark.parametrize(
    ("raw", "echoed"),
    [
        (b'{"kind": "pretrain", "hyperparameters": {"lr": NaN}}', "NaN"),
        (b'{"kind": "pretrain", "hyperparameters": {"momentum": Infinity}}', "Infinity"),
        (b'{"kind": "pretrain", "hyperparameters": {"weight_decay": -Infinity}}', "-Infinity"),
        (b'{"kind": "pretrain", "unknown": [1, NaN]}', [1, "NaN"]),
    ],
    ids=["nan", "infinity", "minus-infinity", "nan-in-an-unknown-field"],
)
def test_nan_or_infinity_in_a_body_is_422_echoing_it_as_a_string(client, enqueued, count_rows, raw, echoed):
    response = client.post("/jobs", content=raw, headers=JSON)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["input"] == echoed
    assert_nothing_created(count_rows, enqueued)


def test_a_non_finite_learning_rate_is_refused_as_not_finite(client):
    response = client.post(
        "/jobs", content=b'{"kind": "pretrain", "hyperparameters": {"lr": NaN}}', headers=JSON
    )

    [error] = response.json()["detail"]
    assert error["loc"][-1] == "lr" and "finite" in error["msg"]


def test_bytes_that_are_not_utf8_under_another_content_type_are_422_not_500(client):
    response = client.post("/jobs", content=b"\xff\xfe\xfd", headers={"content-type": "text/plain"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


# ---------------------------------------------------------------- paging


@pytest.mark.parametrize("path", ["/jobs", "/checkpoints", "/experiments"])
@pytest.mark.parametrize("skip", [2**31, 2**63])
def test_skip_beyond_a_32_bit_integer_is_422_naming_skip(client, path, skip):
    response = client.get(path, params={"skip": skip})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "skip"]


@pytest.mark.parametrize("path", ["/jobs", "/checkpoints", "/experiments"])
def test_the_largest_skip_is_an_empty_page(client, path):
    response = client.get(path, params={"skip": 2**31 - 1})

    assert response.status_code == 200 and response.json()["data"] == []


# ---------------------------------------------------------------- the engine's rules at submission


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {"optimizer": "adam", "nesterov": True},
        {"optimizer": "rmsprop", "nesterov": True},
        {"optimizer": "sgd", "momentum": 0.0, "nesterov": True},
    ],
    ids=["adam", "rmsprop", "sgd-without-momentum"],
)
def test_a_pretrain_with_nesterov_the_optimiser_refuses_is_422_naming_nesterov(
    client, enqueued, count_rows, hyperparameters
):
    response = client.post("/jobs", json=PRETRAIN | {"hyperparameters": hyperparameters})

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "pretrain", "hyperparameters", "nesterov"]
    assert "sgd" in error["msg"] and error["input"] is True
    assert_nothing_created(count_rows, enqueued)


def test_a_pretrain_with_nesterov_on_sgd_is_accepted(client, enqueued):
    hyperparameters = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True}

    response = client.post("/jobs", json=PRETRAIN | {"hyperparameters": hyperparameters})

    assert response.status_code == 202, response.text
    assert len(enqueued) == 1


def test_an_input_smaller_than_the_architecture_takes_is_422_naming_image_size(client, enqueued, count_rows):
    """vgg11_bn's five max-pools need 32 px: a 16 px pre-train was a 202 that crashed in the worker."""
    body = PRETRAIN | {
        "model": "vgg11_bn",
        "data": {"image_size": 16, "train_samples": 10, "test_samples": 10},
    }

    response = client.post("/jobs", json=body)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "pretrain", "data", "image_size"]
    assert "at least 32" in error["msg"]
    assert_nothing_created(count_rows, enqueued)
    accepted = client.post("/jobs", json=body | {"data": {**body["data"], "image_size": 32}})
    assert accepted.status_code == 202, accepted.text


def test_a_finetune_with_nesterov_the_optimiser_refuses_is_422_naming_nesterov(
    client, enqueued, count_rows, make_job, make_checkpoint_row
):
    source = make_job(status=JobStatus.succeeded)
    make_checkpoint_row(source)
    body = finetune(source.id, hyperparameters={"epochs": 2, "optimizer": "adamw", "nesterov": True})

    response = client.post("/jobs", json=body)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "finetune", "hyperparameters", "nesterov"]
    assert_nothing_created(count_rows, enqueued, jobs_before=1)
    assert count_rows(Job) == 1
