"""layer_probes and transferability: what they plan, what GET /experiments/{id} and the artifacts show
once the jobs have ended, and the report's section 9 sentences made from the stored numbers.

The worker is played here (tests/experiments/conftest.py: finish_jobs stores results as a worker
would); test_probes_end_to_end.py runs the same on real worker processes."""

from __future__ import annotations

import re

import pytest

from core.experiments.plan import count_jobs, plan_finetunes
from core.experiments.schemas import ExperimentCreate
from core.models import EpochMetric, Job
from tests.experiments.conftest import create
from tests.experiments.test_end_to_end import assert_png

PRETRAIN = {"dataset": "stl10", "model": "simple_cnn"}


def request(**fields) -> ExperimentCreate:
    values = {"name": "t", "pretrain": PRETRAIN, "hyperparameters": {"epochs": 2}}
    values.update(fields)
    return ExperimentCreate.model_validate(values)


# ---------------------------------------------------------------- planning


def test_layer_probes_plan_a_probe_and_its_random_twin_per_block_and_seed():
    jobs = [j for j in plan_finetunes(request(layer_probes=True, repeats=2), "simple_cnn")
            if j.spec.probe_block is not None]  # fmt: skip

    assert sorted({j.spec.probe_block for j in jobs}) == [0, 1, 2, 3]  # simple_cnn's four blocks
    for block in range(4):
        runs = [(j.role, j.spec.hyperparameters.seed, j.spec.random_init) for j in jobs
                if j.spec.probe_block == block]  # fmt: skip
        assert sorted(runs) == [("control", 0, True), ("control", 1, True), ("finetune", 0, False),
                                ("finetune", 1, False)]  # fmt: skip
    assert all(j.spec.strategy == "linear" and j.spec.data.augment is False for j in jobs)
    assert {j.variant for j in jobs} == {"probe-0", "probe-1", "probe-2", "probe-3"}


def test_transferability_adds_every_depth_and_the_curves_ends_to_those_asked_for():
    planned = plan_finetunes(request(strategies=["partial"], frozen_blocks=[2], transferability=True),
                             "simple_cnn")  # fmt: skip

    variants = list(dict.fromkeys(j.variant for j in planned))
    assert variants == ["partial-2", "partial-1", "partial-3", "full", "linear"]


@pytest.mark.parametrize(
    "fields",
    [{"layer_probes": True}, {"transferability": True}, {"layer_probes": True, "transferability": True,
                                                         "repeats": 3, "baselines": ["pixels"]}],
    ids=["probes", "transferability", "both"],
)  # fmt: skip
def test_the_job_count_matches_the_plan(fields):
    asked = request(**fields)
    assert count_jobs(asked) == len(plan_finetunes(asked, "simple_cnn")) + 1  # and the pre-train


def test_linear_epochs_set_the_epochs_of_every_linear_probe_only():
    planned = plan_finetunes(request(layer_probes=True, baselines=["pixels"], linear_epochs=30), "simple_cnn")

    epochs = {(j.variant, j.spec.hyperparameters.epochs) for j in planned}
    assert ("linear", 30) in epochs and ("pixels", 30) in epochs and ("probe-0", 30) in epochs
    assert ("full", 2) in epochs and ("partial-2", 2) in epochs


# ---------------------------------------------------------------- a finished experiment

JITTER = {0: 0.01, 1: -0.01}  # seed -> offset: two seeds, a 95% interval of 0.127 either side
PROBE = {0: (0.70, 0.55), 1: (0.78, 0.55), 2: (0.86, 0.55), 3: (0.94, 0.55)}  # block: (ours, random)
CURVE = {"full": (0.95, 0.93), "partial-1": (0.95, 0.85), "partial-2": (0.94, 0.70),
         "partial-3": (0.80, 0.40), "linear": (0.70, 0.30)}  # fmt: skip


def score(job: Job) -> tuple[float, float]:
    seed = job.spec["hyperparameters"]["seed"]
    if job.role == "baseline":
        value = 0.90
    elif job.spec.get("probe_block") is not None:
        value = PROBE[job.spec["probe_block"]][job.role == "control"]
    else:
        frozen = job.spec.get("frozen_blocks")
        variant = f"partial-{frozen}" if job.strategy == "partial" else job.strategy
        value = CURVE[variant][job.role == "control"]
    value += JITTER[seed]
    return value, value


@pytest.fixture
def finished(client, pretrained, finish_jobs, session) -> dict:
    session.add(EpochMetric(job_id=pretrained.id, epoch=1, phase="train", loss=1, accuracy=0.3, lr=0.001,
                            seconds=1.0, images_per_second=100.0))  # fmt: skip
    session.commit()
    experiment = create(client, pretrained_job=pretrained.id, repeats=2, layer_probes=True,
                        transferability=True, baselines=["pixels"])  # fmt: skip
    finish_jobs(experiment["id"], score)
    response = client.get(f"/experiments/{experiment['id']}")
    assert response.status_code == 200
    return response.json()


def test_layer_probes_give_one_row_per_block_with_intervals_over_the_seeds(finished):
    rows = finished["layer_probes"]

    assert [(r["block"], r["block_name"]) for r in rows] == [
        (0, "stage1"), (1, "stage2"), (2, "stage3"), (3, "stage4")
    ]  # fmt: skip
    for row in rows:
        ours, random = PROBE[row["block"]]
        assert row["n"] == 2
        assert row["accuracy_transferred"] == pytest.approx(ours, abs=1e-9)
        assert row["accuracy_random"] == pytest.approx(random, abs=1e-9)
        assert row["accuracy_transferred_ci95"] == pytest.approx(0.127062, abs=1e-5)  # t(.975,1) s/sqrt 2
        assert row["gain_mean"] == pytest.approx(ours - random, abs=1e-9) and row[
            "gain_ci95"
        ] == pytest.approx(0, abs=1e-9)


def test_probes_stay_out_of_the_strategies_comparison(finished):
    variants = {r["variant"] for r in finished["comparison"]["rows"]}
    assert variants == {"linear", "partial-1", "partial-2", "partial-3", "full", "pixels"}
    assert {s["variant"] for s in finished["summary"]} == variants
    assert {j["variant"] for j in finished["jobs"]} >= {"probe-0", "probe-3"}


def test_the_experiment_draws_the_layer_probes_and_the_transferability_curve(client, finished):
    listing = client.get(f"/experiments/{finished['id']}/artifacts").json()

    names = [a["name"] for a in listing["data"]]
    assert "layer_probes.png" in names and "transferability.png" in names
    for item in listing["data"]:
        assert_png(client.get(item["url"]).content)


def test_one_partial_depth_draws_no_transferability_curve(client, pretrained, finish_jobs):
    experiment = create(client, pretrained_job=pretrained.id, strategies=["partial", "full"])
    finish_jobs(experiment["id"], lambda job: (0.9, 0.8))

    names = [a["name"] for a in client.get(f"/experiments/{experiment['id']}/artifacts").json()["data"]]
    assert "transferability.png" not in names and "layer_probes.png" not in names


def _section_9(client, experiment_id: str) -> str:
    report = client.get(f"/experiments/{experiment_id}/report").text
    start = report.index("(seed section 9)")
    return report[start : report.index("## Best strategy")]


def test_the_report_names_the_block_that_probes_best_and_where_pre_training_beats_random(client, finished):
    text = _section_9(client, finished["id"])
    rows = finished["layer_probes"]
    best = max(rows, key=lambda r: r["accuracy_transferred"])

    assert (
        f"The features after block {best['block']} ({best['block_name']}) probe best: "
        f"{100 * best['accuracy_transferred']:.2f}% ± {100 * best['accuracy_transferred_ci95']:.2f}"
    ) in text
    apart = [r for r in rows if r["accuracy_transferred"] - r["accuracy_transferred_ci95"]
             > r["accuracy_random"] + r["accuracy_random_ci95"]]  # fmt: skip
    named = ", ".join(f"{r['block_name']} ({100 * r['gain_mean']:+.2f} points)" for r in apart)
    assert f"Pre-trained features beat random ones with non-overlapping 95% intervals after {named}." in text
    assert "the intervals overlap" in text or "the pixels baseline" in text


def test_the_report_says_where_freezing_more_blocks_starts_to_cost_accuracy(client, finished):
    text = _section_9(client, finished["id"])
    summary = {s["variant"]: s for s in finished["summary"] if s["role"] == "finetune"}
    best, costly = summary["full"], summary["partial-3"]

    assert "Best at 0 frozen blocks (full)" in text
    drop = 100 * (costly["test_accuracy_mean"] - best["test_accuracy_mean"])
    assert f"at 3 frozen blocks (partial-3) freezing starts to cost accuracy: {drop:+.2f} points" in text
    assert re.search(
        r"Transferred beats its control with non-overlapping 95% intervals at [^.]*3 frozen blocks", text
    )


def test_the_report_shows_the_epochs_each_run_used(client, finished):
    report = client.get(f"/experiments/{finished['id']}/report").text
    assert "epochs run" in report and "| 2/2 |" in report
