"""ImageNet weights through the API: GET /weights lists the files, a fine-tune may start from them
(source_weights 'imagenet' with model), and a missing file is a 422 at submission naming the file
and how to get it; exactly one source may be given."""

from __future__ import annotations

import pytest

from core.models import Job
from engine.pretrained import IMAGENET_FILES
from engine.spec import Architecture
from tests.imagenet_weights import write_torchvision_weights


def imagenet_job(**fields):
    body = {
        "kind": "finetune",
        "dataset": "mnist",
        "source_weights": "imagenet",
        "model": "mobilenet_v3_small",
        "data": {"image_size": 32},
    }
    return {**body, **fields}


def test_weights_lists_each_architectures_file(client, settings):
    body = client.get("/weights").json()

    assert body["count"] == 3 and body["download"] is False
    names = {row["architecture"]: row["file_name"] for row in body["data"]}
    assert names["resnet18"] == "resnet18-f37072fd.pth"
    assert all(row["present"] is False and row["size_bytes"] is None for row in body["data"])


def test_weights_shows_a_present_file_with_its_size(client, settings, monkeypatch):
    path = write_torchvision_weights(settings.data_root / "weights", "mobilenet_v3_small")
    monkeypatch.setitem(IMAGENET_FILES, Architecture.mobilenet_v3_small, path.name)

    rows = {row["architecture"]: row for row in client.get("/weights").json()["data"]}

    assert rows["mobilenet_v3_small"]["present"] is True
    assert rows["mobilenet_v3_small"]["size_bytes"] == path.stat().st_size


def test_a_missing_weights_file_is_422_at_submission_naming_the_file(client, count_rows, enqueued):
    response = client.post("/jobs", json=imagenet_job())

    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "finetune", "source_weights"]
    assert "mobilenet_v3_small-047dcff4.pth" in error["msg"] and "TRANSFERLAB_DOWNLOAD=true" in error["msg"]
    assert count_rows(Job) == 0 and enqueued == []


def test_with_downloads_on_a_missing_file_is_accepted(client, env, enqueued):
    env(DOWNLOAD="true")

    assert client.post("/jobs", json=imagenet_job()).status_code == 202


def test_a_present_file_queues_a_finetune_of_that_architecture(client, settings, monkeypatch, enqueued):
    path = write_torchvision_weights(settings.data_root / "weights", "mobilenet_v3_small")
    monkeypatch.setitem(IMAGENET_FILES, Architecture.mobilenet_v3_small, path.name)

    response = client.post("/jobs", json=imagenet_job())

    assert response.status_code == 202, response.text
    job = response.json()
    assert job["architecture"] == "mobilenet_v3_small" and job["source"] is None
    assert job["spec"]["source_weights"] == "imagenet"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"source": "abc"}, "source_weights"),  # two sources
        ({"source_weights": None, "model": None}, "source"),  # none
        ({"model": "simple_cnn"}, "model"),  # torchvision has no ImageNet simple_cnn
        ({"model": None}, "model"),  # whose weights?
    ],
)
def test_not_exactly_one_usable_source_is_422_naming_the_field(client, count_rows, fields, field):
    response = client.post("/jobs", json=imagenet_job(**fields))

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "finetune", field]
    assert count_rows(Job) == 0


def test_model_with_a_source_job_is_422(client, make_job):
    source = make_job(status="succeeded")

    response = client.post("/jobs", json=imagenet_job(source_weights=None, source=source.id))

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "finetune", "model"]
