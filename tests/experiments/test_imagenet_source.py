"""An experiment with imagenet: every fine-tune also runs from torchvision's ImageNet weights, and the
comparison and the report put "pre-trained on STL-10", "ImageNet weights" and random weights side by
side, the ImageNet runs paired with the same controls."""

from __future__ import annotations

import pytest

from core.models import Job, JobStatus
from tests.experiments.conftest import create


@pytest.fixture
def resnet_pretrained(pretrained, session):
    """The conftest's succeeded pre-train, as resnet18 (an architecture with ImageNet weights)."""
    pretrained.architecture = "resnet18"
    pretrained.spec = {**pretrained.spec, "model": "resnet18"}
    pretrained.checkpoint.architecture = "resnet18"
    session.commit()
    return pretrained


@pytest.fixture
def weights_present(settings):
    # POST /experiments checks that the file is there; its checksum is the worker's to check, when it
    # loads it (tests/worker/test_sources.py). Here no job runs.
    folder = settings.data_root / "weights"
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(b"not read here")


def score(job: Job) -> tuple[float, float]:
    """(val, test): ImageNet's weights best, the STL-10 pre-train next, random weights last."""
    if job.spec.get("random_init"):
        return 0.5, 0.5
    if job.spec.get("source_weights") == "imagenet":
        return 0.9, 0.9
    return 0.8, 0.8


def test_each_finetune_is_also_planned_from_imagenet_weights(
    client, resnet_pretrained, weights_present, session
):
    experiment = create(
        client, pretrained_job=resnet_pretrained.id, strategies=["linear", "full"], imagenet=True
    )

    jobs = session.query(Job).filter(Job.experiment_id == experiment["id"]).all()
    imagenet = [j for j in jobs if j.spec.get("source_weights") == "imagenet"]
    assert len(jobs) == 6 and len(imagenet) == 2
    assert all(
        j.source_job_id is None and j.spec["model"] == "resnet18" and j.role == "finetune" for j in imagenet
    )
    assert all(j.source_job_id == resnet_pretrained.id for j in jobs if j not in imagenet)


def test_an_architecture_without_imagenet_weights_is_422_naming_imagenet(client, pretrained, count_rows):
    response = client.post(
        "/experiments",
        json={"name": "x", "pretrained_job": pretrained.id, "imagenet": True, "data": {"image_size": 32}},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "imagenet"]
    assert "simple_cnn" in response.json()["detail"][0]["msg"]


def test_a_missing_weights_file_is_422_naming_the_file(client, resnet_pretrained, count_rows):
    jobs_before = count_rows(Job)

    response = client.post(
        "/experiments",
        json={
            "name": "x",
            "pretrained_job": resnet_pretrained.id,
            "imagenet": True,
            "data": {"image_size": 32},
        },
    )

    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "imagenet"] and "resnet18-f37072fd.pth" in error["msg"]
    assert count_rows(Job) == jobs_before


def test_the_comparison_pairs_both_sources_with_the_same_control(
    client, resnet_pretrained, weights_present, finish_jobs
):
    experiment = create(client, pretrained_job=resnet_pretrained.id, strategies=["linear"], imagenet=True)
    finish_jobs(experiment["id"], score)

    rows = client.get(f"/experiments/{experiment['id']}").json()["comparison"]["rows"]
    by_variant = {(r["variant"], r["control"]): r for r in rows}
    ours, imagenet, control = (
        by_variant[("linear", False)],
        by_variant[("linear@imagenet", False)],
        by_variant[("linear", True)],
    )

    assert (ours["source"], imagenet["source"], control["source"]) == ("pretrained", "imagenet", None)
    assert ours["control_job_id"] == imagenet["control_job_id"] == control["job_id"]
    assert imagenet["transfer_gain"] == pytest.approx(0.4) and ours["transfer_gain"] == pytest.approx(0.3)
    assert all(r["status"] == JobStatus.succeeded for r in rows)


def test_the_report_compares_the_pretrain_imagenet_and_random_weights(
    client, resnet_pretrained, weights_present, finish_jobs
):
    experiment = create(client, pretrained_job=resnet_pretrained.id, strategies=["linear"], imagenet=True)
    finish_jobs(experiment["id"], score)

    text = client.get(f"/experiments/{experiment['id']}/report", params={"format": "markdown"}).text

    assert "## Pre-trained on STL-10, ImageNet weights, or random weights" in text
    assert (
        "linear: 80.00% pre-trained on STL-10, 90.00% from ImageNet weights, 50.00% from random weights."
        in text
    )
