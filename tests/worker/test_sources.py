"""A worker fine-tunes from each kind of source: a checkpoint named by id (no source job, as an
imported one has none) and torchvision's ImageNet weights in the data root's weights/ folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from core.models import Checkpoint
from engine.pretrained import IMAGENET_FILES, sha256_of
from engine.spec import Architecture
from tests.imagenet_weights import flip_one_byte, write_torchvision_weights
from worker import tasks

QUICK = {"epochs": 1, "batch_size": 32}
SMALL = {"image_size": 32}


@pytest.fixture
def data_root(settings, tiny_data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny data sets with a weights/ folder beside them."""
    from core import db

    root = tmp_path / "data"
    root.mkdir()
    for entry in tiny_data_root.iterdir():
        (root / entry.name).symlink_to(entry)
    monkeypatch.setenv("TRANSFERLAB_DATA_DIR", str(root))
    db.reset_caches()
    return root


@pytest.fixture
def imagenet_file(data_root, monkeypatch) -> Path:
    path = write_torchvision_weights(data_root / "weights", "mobilenet_v3_small")
    monkeypatch.setitem(IMAGENET_FILES, Architecture.mobilenet_v3_small, path.name)
    return path


def imagenet_spec() -> dict:
    return {
        "kind": "finetune",
        "dataset": "mnist",
        "source_weights": "imagenet",
        "model": "mobilenet_v3_small",
        "hyperparameters": QUICK,
        "data": SMALL,
    }


def checkpoint_of(sessions, job_id: str) -> Checkpoint:
    with sessions() as session:
        return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id))


def test_a_finetune_from_imagenet_weights_records_the_file_it_started_from(
    imagenet_file, settings, sessions, make_job
):
    job_id = make_job(spec=imagenet_spec())

    assert tasks.run_job(job_id) == "succeeded"
    checkpoint = checkpoint_of(sessions, job_id)
    assert checkpoint.architecture == "mobilenet_v3_small" and checkpoint.dataset == "mnist"
    meta = json.loads((settings.checkpoints_dir / checkpoint.path / "model.json").read_text())
    assert meta["source_weights"] == "imagenet" and meta["source_sha256"] == sha256_of(imagenet_file)


def test_a_changed_imagenet_file_fails_the_job_naming_the_checksum(
    imagenet_file, sessions, make_job, job_reader
):
    flip_one_byte(imagenet_file)
    job_id = make_job(spec=imagenet_spec())

    assert tasks.run_job(job_id) == "failed"
    error = job_reader(job_id).error
    assert error.startswith("CheckpointError:") and "sha256" in error and imagenet_file.name in error


def test_a_finetune_from_a_checkpoint_id_needs_no_source_job(data_root, settings, sessions, make_job):
    source_job = make_job(
        spec={
            "kind": "pretrain",
            "dataset": "stl10",
            "model": "simple_cnn",
            "hyperparameters": QUICK,
            "data": SMALL,
        }
    )
    assert tasks.run_job(source_job) == "succeeded"
    source = checkpoint_of(sessions, source_job)
    spec = {"kind": "finetune", "dataset": "mnist", "hyperparameters": QUICK, "data": SMALL}

    job_id = make_job(spec=spec, source_checkpoint_id=source.id)

    assert tasks.run_job(job_id) == "succeeded"
    assert checkpoint_of(sessions, job_id).architecture == "simple_cnn"
