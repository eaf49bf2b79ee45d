"""repeats: every fine-tune and control runs at seeds seed..seed+repeats-1; the summary gives means with
95% t-intervals, paired transfer gains, and chooses hyperparameters on the mean validation accuracy."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from core.experiments.stats import mean_ci95
from core.models import Job
from tests.experiments.conftest import body, create

# ---------------------------------------------------------------- the interval arithmetic


def test_the_interval_of_three_values_is_the_hand_computed_t_interval():
    # mean 0.92, s = 0.02, t(0.975, 2) = 4.302653: half-width 4.302653 * 0.02 / sqrt(3) = 0.049683
    interval = mean_ci95([0.90, 0.92, 0.94])
    assert interval.n == 3
    assert interval.mean == pytest.approx(0.92)
    assert interval.ci95 == pytest.approx(0.049683, abs=1e-6)


@pytest.mark.parametrize("values", [[0.5, 0.7], [1.0, 2.0, 4.0, 8.0], [0.991, 0.993, 0.990, 0.994, 0.989]])
def test_the_interval_matches_scipy(values):
    interval = mean_ci95(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=interval.mean, scale=stats.sem(values))
    assert interval.mean - interval.ci95 == pytest.approx(low)
    assert interval.mean + interval.ci95 == pytest.approx(high)


def test_one_value_has_no_interval_and_none_has_no_mean():
    assert mean_ci95([0.8]).ci95 is None and mean_ci95([0.8]).mean == 0.8
    assert mean_ci95([]).mean is None and mean_ci95([]).n == 0


def test_an_interval_contains_zero_when_its_ends_straddle_it():
    assert mean_ci95([0.01, -0.01, 0.02]).contains_zero()
    assert not mean_ci95([0.05, 0.06, 0.055]).contains_zero()


# ---------------------------------------------------------------- planning


def test_repeats_run_every_fine_tune_and_control_at_consecutive_seeds(client, pretrained, session):
    experiment = create(client, pretrained_job=pretrained.id, strategies=["linear"], repeats=3,
                        hyperparameters={"epochs": 2, "batch_size": 32, "seed": 5})  # fmt: skip

    jobs = session.query(Job).filter(Job.experiment_id == experiment["id"]).all()
    seeds = sorted((j.role, j.spec["hyperparameters"]["seed"]) for j in jobs)
    assert seeds == [("control", 5), ("control", 6), ("control", 7), ("finetune", 5), ("finetune", 6),
                     ("finetune", 7)]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"repeats": 0}, ["body", "repeats"]),
        ({"repeats": 11}, ["body", "repeats"]),
        ({"repeats": 3, "hyperparameters": {"seed": 2**31 - 2}}, ["body", "repeats"]),
    ],
    ids=["zero", "over-ten", "seeds-past-the-largest"],
)
def test_repeats_out_of_bounds_are_refused_naming_the_field(client, pretrained, count_rows, fields, loc):
    response = client.post("/experiments", json=body(pretrained_job=pretrained.id, **fields))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc
    assert count_rows(Job) == 1  # the pre-train only


# ---------------------------------------------------------------- the summary of a finished experiment

# (strategy, lr, control, seed) -> (val, test). linear at lr 0.01 has the best single validation run
# (seed 0) but lr 0.001 the best mean: the choice follows the mean. full's gains straddle 0.
SCORES = {
    ("linear", 0.01, False, 0): (0.95, 0.80), ("linear", 0.01, False, 1): (0.70, 0.78),
    ("linear", 0.01, False, 2): (0.72, 0.79),
    ("linear", 0.001, False, 0): (0.88, 0.86), ("linear", 0.001, False, 1): (0.87, 0.85),
    ("linear", 0.001, False, 2): (0.89, 0.87),
    ("full", 0.01, False, 0): (0.97, 0.96), ("full", 0.01, False, 1): (0.96, 0.93),
    ("full", 0.01, False, 2): (0.96, 0.95),
    ("full", 0.001, False, 0): (0.90, 0.90), ("full", 0.001, False, 1): (0.90, 0.90),
    ("full", 0.001, False, 2): (0.90, 0.90),
}  # fmt: skip
CONTROL_TEST = {"linear": (0.30, 0.32, 0.31), "full": (0.95, 0.95, 0.94)}


def score(job: Job) -> tuple[float, float]:
    hp = job.spec["hyperparameters"]
    if job.spec["random_init"]:
        return 0.5, CONTROL_TEST[job.strategy][hp["seed"]]
    return SCORES[(job.strategy, hp["lr"], False, hp["seed"])]


@pytest.fixture
def summary(client, pretrained, finish_jobs):
    experiment = create(client, pretrained_job=pretrained.id, strategies=["linear", "full"], repeats=3,
                        sweep={"lr": [0.01, 0.001]})  # fmt: skip
    finish_jobs(experiment["id"], score)
    return client.get(f"/experiments/{experiment['id']}").json()


def group(summary, strategy, lr, role="finetune"):
    (row,) = [
        r
        for r in summary["comparison"]["summary"]
        if (r["strategy"], r["lr"], r["role"]) == (strategy, lr, role)
    ]
    return row


def test_every_grid_point_and_role_is_one_summary_row_over_its_three_seeds(summary):
    rows = summary["comparison"]["summary"]
    assert len(rows) == 2 * 2 * 2  # strategies x learning rates x (fine-tune, control)
    assert all(r["n"] == 3 and sorted(r["seeds"]) == [0, 1, 2] for r in rows)
    assert summary["summary"] == rows  # also at the top of GET /experiments/{id}


def test_a_summary_row_has_the_mean_and_the_t_interval_of_its_runs(summary):
    row = group(summary, "linear", 0.001)
    tests = [
        row_["test_accuracy"] for row_ in summary["comparison"]["rows"] if row_["job_id"] in row["job_ids"]
    ]
    expected = mean_ci95(tests)
    assert row["test_accuracy_mean"] == pytest.approx(expected.mean)
    assert row["test_accuracy_ci95"] == pytest.approx(expected.ci95)
    assert row["macro_f1_ci95"] is not None and row["train_seconds_mean"] is not None


def test_the_transfer_gain_is_paired_seed_by_seed_with_its_control(summary):
    row = group(summary, "linear", 0.001)
    by_id = {r["job_id"]: r for r in summary["comparison"]["rows"]}
    controls = {j: by_id[by_id[j]["control_job_id"]] for j in row["job_ids"]}
    pairs = [(by_id[j]["test_accuracy"], controls[j]["test_accuracy"]) for j in row["job_ids"]]
    assert all(by_id[j]["seed"] == controls[j]["seed"] for j in row["job_ids"])
    expected = mean_ci95([a - b for a, b in pairs])
    assert row["transfer_gain_mean"] == pytest.approx(expected.mean)
    assert row["transfer_gain_ci95"] == pytest.approx(expected.ci95)
    assert row["transfer_measured"] is True


def test_a_gain_whose_interval_contains_zero_is_not_a_measured_transfer(summary):
    row = group(summary, "full", 0.01)
    low = row["transfer_gain_mean"] - row["transfer_gain_ci95"]
    high = row["transfer_gain_mean"] + row["transfer_gain_ci95"]
    assert low <= 0 <= high
    assert row["transfer_measured"] is False


def test_hyperparameters_are_chosen_on_the_mean_validation_accuracy(summary):
    assert group(summary, "linear", 0.001)["chosen"] and not group(summary, "linear", 0.01)["chosen"]
    chosen_runs = [r for r in summary["comparison"]["rows"] if r["chosen"]]
    # One run stands for each variant: the chosen grid point's first seed.
    assert sorted((r["strategy"], r["lr"], r["seed"]) for r in chosen_runs) == [
        ("full", 0.01, 0),
        ("linear", 0.001, 0),
    ]


def test_the_best_strategy_carries_its_mean_its_interval_and_n(summary):
    best = summary["comparison"]["best"]
    full = group(summary, "full", 0.01)
    assert best["variant"] == "full" and best["n"] == 3
    assert best["measure"].startswith("mean validation accuracy") and "3 seeds" in best["measure"]
    assert best["selection_value"] == pytest.approx((0.97 + 0.96 + 0.96) / 3)
    assert best["test_accuracy"] == pytest.approx(full["test_accuracy_mean"])
    assert best["test_accuracy_ci95"] == pytest.approx(full["test_accuracy_ci95"])
    assert math.isfinite(best["transfer_gain_ci95"])


def test_the_report_gives_intervals_and_says_where_no_transfer_was_measured(client, summary):
    text = client.get(f"/experiments/{summary['id']}/report").text
    assert "mean of 3 runs" in text and "95% interval" in text
    assert "no transfer was measured" in text  # full's gain straddles 0
    assert "full" in text.split("no transfer was measured")[0].splitlines()[-1]


# ---------------------------------------------------------------- the pixels baseline


def baseline_score(job: Job) -> tuple[float, float]:
    seed = job.spec["hyperparameters"]["seed"]
    if job.role == "baseline":
        return 0.9, (0.90, 0.91)[seed]
    if job.spec["random_init"]:
        return 0.5, 0.3
    # linear: below the pixels at both seeds; full: above them at both
    return {"linear": (0.85, (0.86, 0.88)[seed]), "full": (0.97, (0.98, 0.985)[seed])}[job.strategy]


@pytest.fixture
def with_baseline(client, pretrained, finish_jobs, session):
    experiment = create(client, pretrained_job=pretrained.id, strategies=["linear", "full"], repeats=2,
                        baselines=["pixels"])  # fmt: skip
    finish_jobs(experiment["id"], baseline_score)
    return client.get(f"/experiments/{experiment['id']}").json()


def test_the_pixels_baseline_runs_pixel_linear_from_scratch_at_every_seed(with_baseline, session):
    baselines = (
        session.query(Job).filter(Job.experiment_id == with_baseline["id"], Job.role == "baseline").all()
    )
    assert sorted(j.spec["hyperparameters"]["seed"] for j in baselines) == [0, 1]
    assert {(j.kind, j.architecture, j.source_job_id, j.dataset) for j in baselines} == {
        ("pretrain", "pixel_linear", None, "mnist")
    }
    rows = [r for r in with_baseline["comparison"]["rows"] if r["role"] == "baseline"]
    assert {(r["variant"], r["transfer_gain"], r["chosen"]) for r in rows} == {("pixels", None, False)}


def test_every_strategy_is_compared_with_the_baseline_paired_by_seed(with_baseline):
    comparisons = {b["variant"]: b for b in with_baseline["comparison"]["baselines"]}
    assert set(comparisons) == {"linear", "full"}
    linear = comparisons["linear"]
    assert linear["n"] == 2 and linear["baseline"] == "pixels"
    assert linear["difference_mean"] == pytest.approx(((0.86 - 0.90) + (0.88 - 0.91)) / 2, abs=1e-9)
    assert linear["beats"] is False
    assert comparisons["full"]["beats"] is True
    best = with_baseline["comparison"]["best"]
    assert best["variant"] == "full"  # a baseline is never the best strategy


def test_the_report_says_which_strategies_beat_the_pixels(client, with_baseline):
    text = client.get(f"/experiments/{with_baseline['id']}/report").text
    assert "### Against the baselines" in text
    assert "linear does not beat it" in text
    assert "The linear probe does not beat raw pixels" in text
    assert "full against the pixels baseline" in text and "above it beyond the seeds' spread" in text
    assert "from scratch" in text  # full's control is named for what it is


def test_a_baseline_is_counted_in_the_job_budget(client, pretrained):
    request = body(
        pretrained_job=pretrained.id,
        baselines=["pixels"],
        sweep={"lr": [0.1, 0.01]},
        repeats=10,
        strategies=["linear", "partial", "full", "lp_ft"],
    )
    response = client.post("/experiments", json=request)
    assert response.status_code == 422
    assert "repeats" in response.json()["detail"][0]["msg"]
