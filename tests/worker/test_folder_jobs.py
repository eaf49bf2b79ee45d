"""A job on a folder data set through the worker: per-class results named after its folders, and a
file that cannot be decoded failing the job with its path relative to the data root."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.datasets import clear_memory_cache
from tests.formats import write_image_folder
from worker import tasks

CLASSES = ("cat", "dog", "owl")


def _spec(dataset: str) -> dict:
    return {
        "kind": "pretrain",
        "dataset": dataset,
        "model": "simple_cnn",
        "hyperparameters": {"epochs": 1, "batch_size": 8},
        "data": {"image_size": 16},
    }


@pytest.fixture
def folder_root(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from core import db

    root = tmp_path / "data"
    write_image_folder(root / "folders" / "pets", CLASSES)
    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(root))
    db.reset_caches()
    clear_memory_cache()
    yield root
    clear_memory_cache()


def test_a_job_on_a_folder_set_reports_its_classes_by_folder_name(folder_root, sessions, make_job):
    from core.models import Checkpoint, Evaluation

    job_id = make_job(spec=_spec("pets"))
    assert tasks.run_job(job_id) == "succeeded"
    with sessions() as session:
        evaluation = session.get(Evaluation, job_id)
        checkpoint = session.query(Checkpoint).filter_by(job_id=job_id).one()
        assert [c["label"] for c in evaluation.per_class] == list(CLASSES)
        assert checkpoint.class_names == list(CLASSES) and checkpoint.dataset == "pets"


def test_an_image_that_cannot_be_decoded_fails_the_job_naming_the_file(folder_root, make_job, job_reader):
    path = folder_root / "folders/pets/test/owl/2.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    job_id = make_job(spec=_spec("pets"))
    assert tasks.run_job(job_id) == "failed"
    error = job_reader(job_id).error
    assert error.startswith("DataFormatError: folders/pets/test/owl/2.png: cannot decode")
    assert str(folder_root) not in error
