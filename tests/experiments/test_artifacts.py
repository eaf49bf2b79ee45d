"""Artifacts: a job's four plots, drawn at their first look from its rows and the test images its
worker kept; an experiment's three; listed and served by name (never by a path from the client)."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from sqlalchemy import func, select

from core.artifacts import JOB_ARTIFACTS, save_artifact
from core.job_plots import examples_path, load_examples, pick_examples, save_examples
from core.models import Artifact, EpochMetric, Evaluation, JobStatus
from core.settings import get_settings
from engine.datasets import load_split
from engine.evaluate import evaluate_predictions
from tests.experiments.conftest import create, store_results


def assert_png(data: bytes) -> Image.Image:
    assert len(data) > 2048, len(data)
    image = Image.open(io.BytesIO(data))
    image.verify()
    assert image.format == "PNG"
    return image


@pytest.fixture
def mnist_job(env, settings, tiny_data_root, make_job, session):
    """A succeeded MNIST fine-tune with stored rows, and the engine's Evaluation of it on the tiny
    test split (50 images; random logits: some right, some wrong)."""
    env(DATA_DIR=str(tiny_data_root))
    job = make_job(status=JobStatus.succeeded, kind="finetune", dataset="mnist", strategy="partial")
    job.spec = {**job.spec, "frozen_blocks": 2, "random_init": False}
    session.commit()
    from engine.datasets import load_split

    labels = load_split("mnist", "test", tiny_data_root).labels
    logits = torch.randn(len(labels), 10, generator=torch.Generator().manual_seed(0))
    logits[torch.arange(0, len(labels), 2), labels[::2]] += 5  # every other one right
    evaluation = evaluate_predictions(logits, labels, [str(d) for d in range(10)], torch.arange(len(labels)))
    store_results(session, job, val=0.5, test=0.5)
    stored = session.get(Evaluation, job.id)
    stored.confusion_matrix, stored.per_class = evaluation.confusion_matrix, evaluation.to_dict()["per_class"]
    session.commit()
    return job, evaluation


def keep_examples(session, job, evaluation) -> None:
    """What the worker does as the job ends: keep the test images its grids will show."""
    save_examples(get_settings(), job.id, pick_examples(session, get_settings(), job.id, evaluation))


def test_a_job_gets_four_png_plots_drawn_at_its_first_listing(client, mnist_job, session):
    job, evaluation = mnist_job
    keep_examples(session, job, evaluation)
    assert session.scalar(select(func.count()).select_from(Artifact)) == 0  # nothing drawn in the job

    listing = client.get(f"/jobs/{job.id}/artifacts").json()

    assert listing["count"] == 4
    for item in listing["data"]:
        response = client.get(item["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png" == item["media_type"]
        assert len(response.content) == item["size"]
        assert_png(response.content)
    assert {i["url"] for i in listing["data"]} == {f"/jobs/{job.id}/artifacts/{n}" for n in JOB_ARTIFACTS}


def test_a_plot_asked_for_by_name_before_any_listing_is_drawn_too(client, mnist_job, session):
    job, evaluation = mnist_job
    keep_examples(session, job, evaluation)

    assert_png(client.get(f"/jobs/{job.id}/artifacts/confusion_matrix.png").content)


def test_the_example_grids_show_test_images_as_the_model_saw_them(client, mnist_job, session):
    job, evaluation = mnist_job
    keep_examples(session, job, evaluation)

    wrong = Image.open(io.BytesIO(client.get(f"/jobs/{job.id}/artifacts/misclassified.png").content))
    right = Image.open(io.BytesIO(client.get(f"/jobs/{job.id}/artifacts/correct.png").content))

    assert wrong.size[0] > 600 and right.size[0] > 600  # 8 columns of captioned images


def test_the_worker_keeps_16_right_and_16_wrong_test_images_with_their_labels(
    env, settings, tiny_data_root, make_job, session
):
    env(DATA_DIR=str(tiny_data_root))
    job = make_job(status=JobStatus.running, kind="finetune", dataset="mnist")
    labels = torch.arange(50) % 10
    predicted = torch.where(torch.arange(50) < 25, labels, (labels + 1) % 10)  # half right, half wrong
    evaluation = evaluate_predictions(
        torch.eye(10)[predicted] * 3, labels, [str(d) for d in range(10)], torch.arange(50)
    )

    keep_examples(session, job, evaluation)

    kept = load_examples(get_settings(), job.id)
    assert kept is not None
    assert kept["correct_images"].shape == (16, 1, 28, 28) and kept["misclassified_images"].shape == (
        16,
        1,
        28,
        28,
    )
    assert (kept["correct_true"] == kept["correct_predicted"]).all()
    assert (kept["misclassified_true"] != kept["misclassified_predicted"]).all()
    assert sorted(set(kept["correct_true"].tolist())) == list(range(10))  # round-robin over the classes
    test_images = load_split("mnist", "test", tiny_data_root).images
    assert (kept["correct_images"][0] == test_images[0].numpy()).all()


def test_without_kept_examples_only_the_plots_from_stored_rows_are_drawn(client, mnist_job):
    job, _ = mnist_job

    names = [i["name"] for i in client.get(f"/jobs/{job.id}/artifacts").json()["data"]]

    assert names == ["confusion_matrix.png", "curves.png"]


def test_an_examples_file_that_is_not_ours_is_ignored(client, settings, mnist_job):
    job, _ = mnist_job
    path = examples_path(settings, job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x80\x04 not safetensors")

    listing = client.get(f"/jobs/{job.id}/artifacts")

    assert listing.status_code == 200 and listing.json()["count"] == 2


def test_a_second_look_draws_nothing_again(client, mnist_job, session, count_rows):
    job, evaluation = mnist_job
    keep_examples(session, job, evaluation)
    client.get(f"/jobs/{job.id}/artifacts")
    first = {p.name: p.stat().st_mtime_ns for p in examples_path(get_settings(), job.id).parent.glob("*.png")}

    client.get(f"/jobs/{job.id}/artifacts")

    assert count_rows(Artifact) == 4
    assert {
        p.name: p.stat().st_mtime_ns for p in examples_path(get_settings(), job.id).parent.glob("*.png")
    } == first


def test_a_job_that_has_not_succeeded_has_no_artifacts(client, make_job, session):
    job = make_job()

    assert client.get(f"/jobs/{job.id}/artifacts").json() == {"data": [], "count": 0}


def test_artifacts_are_found_by_name_only(client, settings, make_job, session):
    job = make_job(status=JobStatus.succeeded)
    save_artifact(session, settings, name="curves.png", title="t", data=b"x" * 10, job_id=job.id)
    row = save_artifact(session, settings, name="evil.png", title="t", data=b"x", job_id=job.id)
    row.path = "../transferlab.sqlite"  # a row that points outside the folder is never served
    session.commit()

    assert client.get(f"/jobs/{job.id}/artifacts/curves.png").content == b"x" * 10
    assert client.get(f"/jobs/{job.id}/artifacts/evil.png").status_code == 404
    assert client.get(f"/jobs/{job.id}/artifacts/nope.png").status_code == 404
    assert client.get(f"/jobs/{job.id}/artifacts/..%2F..%2Ftransferlab.sqlite").status_code == 404
    assert client.get(f"/jobs/{'0' * 32}/artifacts").status_code == 404


def test_a_finished_experiment_has_its_three_comparison_plots(client, pretrained, finish_jobs, session):
    session.add(EpochMetric(job_id=pretrained.id, epoch=1, phase="train", loss=1, accuracy=0.3, lr=0.001,
                            seconds=1.0, images_per_second=100.0))  # fmt: skip
    session.commit()
    experiment = create(client, pretrained_job=pretrained.id)
    finish_jobs(experiment["id"], lambda job: (0.9, 0.8) if job.role == "finetune" else (0.5, 0.4))

    listing = client.get(f"/experiments/{experiment['id']}/artifacts").json()

    assert [a["name"] for a in listing["data"]] == [
        "accuracy_vs_parameters.png",
        "accuracy_vs_time.png",
        "per_class_f1.png",
    ]
    for item in listing["data"]:
        assert_png(client.get(item["url"]).content)
    assert client.get(f"/experiments/{experiment['id']}/artifacts/curves.png").status_code == 404
