"""DELETE /jobs/{id} and /experiments/{id}: every file of what is deleted goes (the state folder is
walked before and after), nothing of anything else; refused with 409 while queued or running and
while others depend on the checkpoint (unless force); the bytes each job and checkpoint hold."""

from __future__ import annotations

import pytest

from core import persist
from core.artifacts import save_artifact
from core.job_logs import job_log_path
from core.models import Artifact, Checkpoint, EpochMetric, Experiment, ExperimentStatus, Job, JobStatus
from core.settings import Settings


def state_files(settings: Settings) -> set[str]:
    """Every file under TRANSFERLAB_HOME but the database's."""
    home = settings.home.resolve()
    return {
        p.relative_to(home).as_posix()
        for p in home.rglob("*")
        if p.is_file() and not p.name.startswith("transferlab.sqlite")
    }


def give_files(settings: Settings, session, job: Job) -> None:
    """What a finished job leaves: a checkpoint folder (and a dead attempt's), a resume state, a plot
    and a log."""
    checkpoint_id = persist.checkpoint_id_for(job.id)
    folder = settings.checkpoints_dir / checkpoint_id
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 3000)
    (folder / "model.json").write_text("{}")
    attempt = settings.checkpoints_dir / f".{checkpoint_id}.attempt-1.42.tmp"
    attempt.mkdir()
    (attempt / "model.safetensors").write_bytes(b"x" * 100)
    resume = settings.runs_dir / job.id / "resume"
    resume.mkdir(parents=True)
    (resume / "state.json").write_text("{}")
    log = job_log_path(settings, job.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("a line\n")
    session.add(
        Checkpoint(
            id=checkpoint_id,
            job_id=job.id,
            architecture=job.architecture,
            dataset=job.dataset,
            strategy=job.strategy,
            class_names=["0"],
            input_spec={"image_size": 32},
            path=checkpoint_id,
            sha256="0" * 64,
            size_bytes=3000,
        )
    )
    save_artifact(session, settings, name="curves.png", title="Curves", data=b"p" * 500, job_id=job.id)
    session.add(
        EpochMetric(
            job_id=job.id,
            epoch=1,
            phase="train",
            loss=1,
            accuracy=0.5,
            lr=0.1,
            seconds=1,
            images_per_second=1,
        )
    )
    session.commit()


@pytest.fixture
def finished_job(settings, session, make_job) -> Job:
    job = make_job(status=JobStatus.succeeded)
    give_files(settings, session, job)
    return job


def test_get_job_says_how_many_bytes_its_files_hold(client, finished_job):
    body = client.get(f"/jobs/{finished_job.id}").json()

    # weights 3000 + meta 2 + dead attempt 100 + resume 2 + plot 500 + log 7
    assert body["disk_bytes"] == 3611
    assert client.get("/jobs").json()["data"][0]["disk_bytes"] is None  # lists do not walk folders


def test_checkpoints_say_how_many_bytes_their_folder_holds(client, finished_job):
    listed = client.get("/checkpoints").json()["data"][0]

    assert listed["disk_bytes"] == 3002 and listed["size_bytes"] == 3000
    assert client.get(f"/checkpoints/{listed['id']}").json()["disk_bytes"] == 3002


def test_deleting_a_job_removes_every_file_and_row_of_it_and_nothing_else(
    client, settings, session, make_job, finished_job, count_rows
):
    other = make_job(status=JobStatus.failed)
    give_files(settings, session, other)
    before = state_files(settings)

    response = client.delete(f"/jobs/{finished_job.id}")

    assert response.status_code == 204, response.text
    assert response.headers["x-freed-bytes"] == "3611"
    gone = before - state_files(settings)
    assert state_files(settings) <= before
    assert all(finished_job.id in path or persist.checkpoint_id_for(finished_job.id) in path for path in gone)
    assert not any(
        finished_job.id in p or persist.checkpoint_id_for(finished_job.id) in p for p in state_files(settings)
    )
    assert any(other.id in p for p in state_files(settings))  # the other job keeps its files
    assert client.get(f"/jobs/{finished_job.id}").status_code == 404
    assert (count_rows(Job), count_rows(Checkpoint), count_rows(Artifact), count_rows(EpochMetric)) == (
        1,
        1,
        1,
        1,
    )


@pytest.mark.parametrize("status", [JobStatus.queued, JobStatus.running])
def test_a_queued_or_running_job_is_not_deleted(client, settings, make_job, status):
    job = make_job(status=status)
    resume = settings.runs_dir / job.id
    resume.mkdir(parents=True)

    response = client.delete(f"/jobs/{job.id}", params={"force": "true"})

    assert response.status_code == 409
    assert f"is {status}; cancel it first" in response.json()["detail"]
    assert resume.exists() and client.get(f"/jobs/{job.id}").status_code == 200


def test_a_job_others_were_fine_tuned_from_is_kept_unless_forced(client, settings, make_job, finished_job):
    child = make_job(status=JobStatus.succeeded, kind="finetune", source_job_id=finished_job.id)

    refused = client.delete(f"/jobs/{finished_job.id}")

    assert refused.status_code == 409
    assert f"job {child.id} fine-tuned from {finished_job.id}" in refused.json()["detail"]
    assert "force=true" in refused.json()["detail"]
    assert (settings.checkpoints_dir / persist.checkpoint_id_for(finished_job.id)).exists()

    assert client.delete(f"/jobs/{finished_job.id}", params={"force": "true"}).status_code == 204
    kept = client.get(f"/jobs/{child.id}").json()
    assert kept["status"] == "succeeded" and kept["source"] is None


def test_a_running_fine_tune_of_the_checkpoint_refuses_even_a_forced_delete(client, make_job, finished_job):
    child = make_job(status=JobStatus.running, kind="finetune", source_job_id=finished_job.id)

    response = client.delete(f"/jobs/{finished_job.id}", params={"force": "true"})

    assert (
        response.status_code == 409
        and f"cancel it first (POST /jobs/{child.id}/cancel)" in response.json()["detail"]
    )


def test_an_experiments_pre_train_is_kept_unless_forced(client, session, finished_job):
    experiment = add_experiment(session, ExperimentStatus.succeeded, pretrain_job_id=finished_job.id)

    refused = client.delete(f"/jobs/{finished_job.id}")

    assert refused.status_code == 409 and f"experiment {experiment.id} uses" in refused.json()["detail"]
    assert client.delete(f"/jobs/{finished_job.id}", params={"force": "true"}).status_code == 204
    session.expire_all()
    assert session.get(Experiment, experiment.id).pretrain_job_id is None


def test_deleting_a_missing_job_is_a_404(client):
    assert client.delete(f"/jobs/{'0' * 32}").status_code == 404


def add_experiment(session, status: ExperimentStatus, **fields) -> Experiment:
    experiment = Experiment(
        name="study",
        status=status,
        request={"name": "study"},
        dataset="mnist",
        architecture="simple_cnn",
        **fields,
    )
    session.add(experiment)
    session.commit()
    return experiment


def test_deleting_an_experiment_removes_its_jobs_and_plots_but_not_a_reused_pre_train(
    client, settings, session, make_job, finished_job, count_rows
):
    experiment = add_experiment(session, ExperimentStatus.succeeded, pretrain_job_id=finished_job.id)
    fine_tunes = [
        make_job(
            status=s,
            kind="finetune",
            source_job_id=finished_job.id,
            experiment_id=experiment.id,
            role="finetune",
        )
        for s in (JobStatus.succeeded, JobStatus.failed)
    ]
    for job in fine_tunes:
        give_files(settings, session, job)
    save_artifact(
        session, settings, name="per_class_f1.png", title="F1", data=b"f", experiment_id=experiment.id
    )
    session.commit()
    experiment_folder = settings.artifacts_dir / "experiments" / experiment.id
    assert experiment_folder.exists()

    assert client.delete(f"/experiments/{experiment.id}").status_code == 204

    assert client.get(f"/experiments/{experiment.id}").status_code == 404
    assert not experiment_folder.exists()
    left = state_files(settings)
    assert not any(job.id in p or persist.checkpoint_id_for(job.id) in p for job in fine_tunes for p in left)
    assert client.get(f"/jobs/{finished_job.id}").status_code == 200  # reused: another's job
    assert (count_rows(Job), count_rows(Experiment), count_rows(Artifact)) == (1, 0, 1)


def test_an_experiment_with_its_own_pre_train_is_deleted_with_it(client, session, make_job, count_rows):
    experiment = add_experiment(session, ExperimentStatus.failed)
    pretrain = make_job(status=JobStatus.failed, experiment_id=experiment.id, role="pretrain")
    experiment.pretrain_job_id = pretrain.id
    session.commit()

    assert client.delete(f"/experiments/{experiment.id}").status_code == 204
    assert (count_rows(Job), count_rows(Experiment)) == (0, 0)


@pytest.mark.parametrize("status", [ExperimentStatus.pretraining, ExperimentStatus.running])
def test_an_experiment_still_running_is_not_deleted(client, session, status):
    experiment = add_experiment(session, status)

    response = client.delete(f"/experiments/{experiment.id}")

    assert response.status_code == 409 and "cancel it first" in response.json()["detail"]


def test_a_cancelled_experiment_whose_job_still_runs_is_not_deleted(client, session, make_job):
    experiment = add_experiment(session, ExperimentStatus.cancelled)
    running = make_job(
        status=JobStatus.running, experiment_id=experiment.id, role="finetune", kind="finetune"
    )

    response = client.delete(f"/experiments/{experiment.id}")

    assert response.status_code == 409 and f"job {running.id!r} is running" in response.json()["detail"]
    session.expire_all()
    assert session.get(Experiment, experiment.id) is not None


def test_a_deleted_checkpoint_answers_no_more_predictions(client, settings, trained_checkpoint):
    from tests.service.test_predict import png, post

    checkpoint_id, job_id = trained_checkpoint.id, trained_checkpoint.job_id
    folder = settings.checkpoints_dir / trained_checkpoint.path
    assert post(client, [("a.png", png())], checkpoint=checkpoint_id).status_code == 200

    assert client.delete(f"/jobs/{job_id}").status_code == 204

    assert post(client, [("a.png", png())], checkpoint=checkpoint_id).status_code == 404
    assert post(client, [("a.png", png())], job=job_id).status_code == 404
    assert not folder.exists()
