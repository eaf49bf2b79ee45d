"""/experiments: create (and refuse, creating nothing), follow, fan out after the pre-train, finish,
list, cancel, and the report's 409 while running."""

from __future__ import annotations

import pytest

from core.experiments.orchestrate import on_job_finished
from core.models import Experiment, Job, JobStatus
from core.recovery import recover
from tests.experiments.conftest import body, create

PRETRAIN = {
    "dataset": "stl10",
    "model": "simple_cnn",
    "hyperparameters": {"epochs": 1},
    "data": {"image_size": 32},
}


def test_a_new_pretrain_is_queued_alone_and_the_fine_tunes_wait_for_it(client, enqueued):
    experiment = create(client, pretrain=PRETRAIN)

    assert experiment["status"] == "pretraining"
    assert [(j["role"], j["status"]) for j in experiment["jobs"]] == [("pretrain", "queued")]
    assert enqueued == [experiment["pretrain_job"]] == [experiment["jobs"][0]["id"]]
    assert experiment["comparison"] is None
    assert experiment["links"]["report"] == f"/experiments/{experiment['id']}/report"


def test_a_reused_pretrain_queues_every_fine_tune_and_control_at_once(client, enqueued, pretrained):
    experiment = create(client, pretrained_job=pretrained.id, sweep={"lr": [0.01, 0.001]})

    assert experiment["status"] == "running"
    assert experiment["pretrain_job"] == pretrained.id
    jobs = experiment["jobs"]
    assert len(jobs) == 3 * 2 * 2 and enqueued == [j["id"] for j in jobs]
    assert {(j["role"], j["variant"], j["lr"]) for j in jobs} == {
        (role, variant, lr)
        for role in ("finetune", "control")
        for variant in ("linear", "partial-2", "full")
        for lr in (0.01, 0.001)
    }
    assert {(j["optimizer"], j["batch_size"], j["status"]) for j in jobs} == {("adam", 32, "queued")}


def test_fine_tunes_are_created_and_enqueued_when_the_pretrain_succeeds(
    client, enqueued, session, make_checkpoint_row
):
    experiment = create(client, pretrain=PRETRAIN)
    pretrain = session.get(Job, experiment["pretrain_job"])
    on_job_finished(session, pretrain.id, enqueued.append)  # still queued: nothing happens
    assert client.get(f"/experiments/{experiment['id']}").json()["status"] == "pretraining"

    pretrain.status = JobStatus.succeeded
    session.commit()
    make_checkpoint_row(pretrain)
    on_job_finished(session, pretrain.id, enqueued.append)
    on_job_finished(
        session, pretrain.id, enqueued.append
    )  # a second call (or a second worker) creates nothing more

    shown = client.get(f"/experiments/{experiment['id']}").json()
    assert shown["status"] == "running"
    finetunes = [j for j in shown["jobs"] if j["role"] != "pretrain"]
    assert len(finetunes) == 6
    assert enqueued == [pretrain.id] + [j["id"] for j in finetunes]
    assert all(session.get(Job, j["id"]).source_job_id == pretrain.id for j in finetunes)


def test_reading_an_experiment_changes_nothing_even_when_it_could_move_on(
    client, enqueued, session, make_checkpoint_row
):
    experiment = create(client, pretrain=PRETRAIN)
    pretrain = session.get(Job, experiment["pretrain_job"])
    pretrain.status = JobStatus.succeeded
    session.commit()
    make_checkpoint_row(pretrain)

    shown = client.get(f"/experiments/{experiment['id']}").json()

    assert shown["status"] == "pretraining" and len(shown["jobs"]) == 1 and enqueued == [pretrain.id]


def test_the_reaper_fans_out_an_experiment_whose_hook_never_ran(
    client, enqueued, session, settings, make_checkpoint_row
):
    experiment = create(client, pretrain=PRETRAIN)
    pretrain = session.get(Job, experiment["pretrain_job"])
    pretrain.status = JobStatus.succeeded
    session.commit()
    make_checkpoint_row(pretrain)

    recover(session, settings, enqueued.append)

    shown = client.get(f"/experiments/{experiment['id']}").json()
    assert shown["status"] == "running" and len(shown["jobs"]) == 7 and len(enqueued) == 7


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_pretrain_that_does_not_succeed_ends_the_experiment(client, enqueued, session, outcome):
    experiment = create(client, pretrain=PRETRAIN)
    pretrain = session.get(Job, experiment["pretrain_job"])
    pretrain.status = outcome
    pretrain.error = "MissingDataError: no stl10" if outcome == "failed" else None
    session.commit()

    on_job_finished(session, pretrain.id, enqueued.append)

    shown = client.get(f"/experiments/{experiment['id']}").json()
    assert shown["status"] == outcome
    assert f"pre-training job {pretrain.id} {outcome}" in shown["error"]
    assert len(shown["jobs"]) == 1 and enqueued == [pretrain.id]
    assert shown["comparison"]["rows"] == [] and shown["comparison"]["best"] is None


def test_the_experiment_succeeds_when_every_job_has_ended(client, pretrained, finish_jobs):
    experiment = create(client, pretrained_job=pretrained.id)
    # Partial's fine-tune fails: the rest still make a comparison.
    finish_jobs(
        experiment["id"],
        lambda job: None if job.strategy == "partial" and job.role == "finetune" else (0.9, 0.88),
    )

    shown = client.get(f"/experiments/{experiment['id']}").json()
    assert shown["status"] == "succeeded" and shown["finished_at"] is not None
    assert shown["job_counts"] == {"queued": 0, "running": 0, "succeeded": 5, "failed": 1, "cancelled": 0}
    assert len(shown["comparison"]["rows"]) == 6


def test_no_fine_tune_succeeding_fails_the_experiment(client, pretrained, finish_jobs):
    experiment = create(client, pretrained_job=pretrained.id, strategies=["linear"])
    finish_jobs(experiment["id"], lambda job: None if job.role == "finetune" else (0.5, 0.5))

    shown = client.get(f"/experiments/{experiment['id']}").json()
    assert shown["status"] == "failed" and "no fine-tune succeeded" in shown["error"]


def test_experiments_are_listed_newest_first_with_paging(client, pretrained):
    ids = [
        create(client, pretrained_job=pretrained.id, name=f"e{i}", strategies=["linear"])["id"]
        for i in range(3)
    ]

    page = client.get("/experiments", params={"skip": 1, "limit": 1}).json()
    listed = client.get("/experiments").json()

    assert listed["count"] == 3 and [e["id"] for e in listed["data"]] == ids[::-1]
    assert page["count"] == 3 and [e["id"] for e in page["data"]] == [ids[1]]
    assert listed["data"][0]["job_counts"]["queued"] == 2 and "jobs" not in listed["data"][0]


# ---------------------------------------------------------------- refusals: 422 / 404 / 409, nothing made


def _refused(client, count_rows, enqueued, payload, code):
    response = client.post("/experiments", json=payload)
    assert response.status_code == code, response.text
    assert count_rows(Experiment) == 0
    assert enqueued == []
    return response.json()["detail"]


def _locs(detail) -> list[tuple]:
    return [tuple(e["loc"]) for e in detail]


@pytest.mark.parametrize(
    "fields, loc",
    [
        ({}, ("body", "pretrained_job")),
        ({"pretrain": PRETRAIN, "pretrained_job": "x" * 32}, ("body", "pretrained_job")),
        ({"pretrain": PRETRAIN, "strategies": ["linear"], "frozen_blocks": [1]}, ("body", "frozen_blocks")),
        ({"pretrain": PRETRAIN, "frozen_blocks": [1, 9]}, ("body", "frozen_blocks", 1)),
        ({"pretrain": PRETRAIN, "strategies": ["lp_ft"], "hyperparameters": {"epochs": 1}},
         ("body", "hyperparameters", "epochs")),
        ({"pretrain": PRETRAIN, "sweep": {"lr": [1, 0.1, 0.01, 0.001, 1e-4, 1e-5, 1e-6, 1e-7],
                                          "batch_size": [16, 32, 64]}}, ("body", "sweep")),
        ({"pretrain": PRETRAIN, "sweep": {"lr": [-1]}}, ("body", "sweep", "lr", 0)),
        ({"pretrain": PRETRAIN, "strategies": ["transfer"]}, ("body", "strategies", 0)),
        ({"pretrain": PRETRAIN, "strategies": []}, ("body", "strategies")),
        ({"pretrain": PRETRAIN, "learning_rate": 0.1}, ("body", "learning_rate")),
        ({"pretrain": {**PRETRAIN, "model": "gpt"}}, ("body", "pretrain", "model")),
        ({"pretrain": PRETRAIN, "frozen_blocks": [2, -1]}, ("body", "frozen_blocks", 1)),
        ({"pretrain": PRETRAIN, "hyperparameters": {"epochs": 2, "nesterov": True}},
         ("body", "hyperparameters", "nesterov")),
        ({"pretrain": PRETRAIN, "hyperparameters": {"epochs": 2, "nesterov": True},
          "sweep": {"optimizer": ["sgd", "adam"]}}, ("body", "hyperparameters", "nesterov")),
        ({"pretrain": {**PRETRAIN, "hyperparameters": {"epochs": 1, "optimizer": "adamw", "nesterov": True}}},
         ("body", "pretrain", "hyperparameters", "nesterov")),
    ],
    ids=["neither", "both", "frozen-without-partial", "frozen-too-deep", "lp_ft-one-epoch", "too-many-jobs",
         "negative-lr", "unknown-strategy", "no-strategies", "unknown-field", "unknown-model",
         "negative-frozen-blocks", "nesterov-without-sgd", "nesterov-with-a-swept-adam", "pretrain-nesterov"],
)  # fmt: skip
def test_a_bad_request_is_a_422_naming_the_field_and_creates_nothing(
    client, count_rows, enqueued, fields, loc
):
    detail = _refused(client, count_rows, enqueued, body(**fields), 422)

    assert loc in _locs(detail), detail
    assert count_rows(Job) == 0


def test_nan_in_an_experiment_is_a_422_echoing_it_as_a_string(client, count_rows, enqueued):
    raw = (
        b'{"name": "x", "pretrained_job": "abc", "hyperparameters": {"lr": NaN}, "sweep": {"lr": [Infinity]}}'
    )

    response = client.post("/experiments", content=raw, headers={"content-type": "application/json"})

    assert response.status_code == 422, response.text
    assert {e["input"] for e in response.json()["detail"]} == {"NaN", "Infinity"}
    assert count_rows(Experiment) == 0 and enqueued == []


def test_frozen_blocks_beyond_a_reused_pretrain_are_a_422_naming_the_value(
    client, count_rows, enqueued, pretrained
):
    detail = _refused(
        client, count_rows, enqueued, body(pretrained_job=pretrained.id, frozen_blocks=[9]), 422
    )

    assert _locs(detail) == [("body", "frozen_blocks", 0)] and detail[0]["input"] == 9


def test_an_unknown_pretrained_job_is_a_404(client, count_rows, enqueued):
    detail = _refused(client, count_rows, enqueued, body(pretrained_job="f" * 32), 404)

    assert "pretrained_job" in detail and "not found" in detail


@pytest.mark.parametrize(
    "status, kind",
    [("queued", "pretrain"), ("running", "pretrain"), ("failed", "pretrain"), ("succeeded", "finetune")],
)
def test_a_pretrained_job_that_is_not_a_succeeded_pretrain_is_a_409(
    client, count_rows, enqueued, make_job, status, kind
):
    job = make_job(status=status, kind=kind)

    detail = _refused(client, count_rows, enqueued, body(pretrained_job=job.id), 409)

    assert "pretrained_job" in detail and job.id in detail
    assert count_rows(Job) == 1


def test_a_broker_that_refuses_is_a_503_and_leaves_no_queued_job(app, client, count_rows, session):
    def refuse(job_id: str) -> None:
        raise ConnectionError("broker down")

    from service import deps

    app.dependency_overrides[deps.get_enqueue] = lambda: refuse
    response = client.post("/experiments", json=body(pretrain=PRETRAIN))

    assert response.status_code == 503 and "could not be queued" in response.json()["detail"]
    experiment = session.query(Experiment).one()
    assert experiment.status == "failed"
    assert [j.status for j in session.query(Job)] == ["failed"]


# ---------------------------------------------------------------- cancel and report


def test_cancel_cancels_queued_jobs_and_asks_running_ones_to_stop(client, session, pretrained):
    experiment = create(client, pretrained_job=pretrained.id)
    running = session.get(Job, experiment["jobs"][0]["id"])
    running.status = JobStatus.running
    session.commit()

    response = client.post(f"/experiments/{experiment['id']}/cancel")

    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["status"] == "cancelled"
    states = {j["id"]: j["status"] for j in shown["jobs"]}
    assert states.pop(running.id) == "running"
    assert set(states.values()) == {"cancelled"}
    session.expire_all()
    assert session.get(Job, running.id).cancel_requested is True
    assert session.get(Job, pretrained.id).status == "succeeded"  # a reused pre-train is not its job
    assert client.post(f"/experiments/{experiment['id']}/cancel").status_code == 409


def test_cancel_during_pretraining_means_no_fine_tune_is_ever_made(
    client, session, enqueued, make_checkpoint_row
):
    experiment = create(client, pretrain=PRETRAIN)
    assert client.post(f"/experiments/{experiment['id']}/cancel").status_code == 200
    pretrain = session.get(Job, experiment["pretrain_job"])
    session.refresh(pretrain)
    assert pretrain.status == "cancelled" and pretrain.cancel_requested

    # Even if the worker had finished it in the meantime, the experiment stays cancelled.
    pretrain.status = JobStatus.succeeded
    session.commit()
    make_checkpoint_row(pretrain)
    on_job_finished(session, pretrain.id, enqueued.append)

    shown = client.get(f"/experiments/{experiment['id']}").json()
    assert shown["status"] == "cancelled" and len(shown["jobs"]) == 1 and len(enqueued) == 1


def test_unknown_experiments_are_404(client):
    for method, path in [("get", ""), ("post", "/cancel"), ("get", "/report"), ("get", "/artifacts")]:
        response = getattr(client, method)(f"/experiments/{'0' * 32}{path}")
        assert response.status_code == 404, (path, response.text)
        assert "not found" in response.json()["detail"]


def test_the_report_is_a_409_until_the_experiment_ends(client, pretrained):
    experiment = create(client, pretrained_job=pretrained.id)

    response = client.get(f"/experiments/{experiment['id']}/report")

    assert response.status_code == 409
    assert "running (0 of 6 jobs ended so far)" in response.json()["detail"]


def test_routes_need_the_token_when_one_is_set(env, client, auth_headers):
    env(API_TOKEN="s3cret-token")
    assert client.get("/experiments").status_code == 401
    assert client.get("/experiments", headers=auth_headers).status_code == 200
    assert client.get(f"/jobs/{'0' * 32}/artifacts").status_code == 401


def test_the_documented_examples_are_valid_requests(client, pretrained):
    examples = client.get("/openapi.json").json()["paths"]["/experiments"]["post"]["requestBody"]["content"]
    examples = examples["application/json"]["examples"]

    seed = client.post("/experiments", json=examples["seed"]["value"])
    reuse = client.post("/experiments", json=examples["reuse"]["value"] | {"pretrained_job": pretrained.id})

    assert seed.status_code == 202, seed.text
    assert reuse.status_code == 202, reuse.text
    assert {j["variant"] for j in reuse.json()["jobs"]} == {"partial-1", "partial-3", "lp_ft"}
