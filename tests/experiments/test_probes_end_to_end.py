"""The `study-smoke` preset end to end on real worker processes (tiny data, one-epoch fine-tunes, two
seeds): the summary over the seeds, `layer_probes` with a row per block, both depth plots, and the
report's section 9 built from the numbers the API serves. Starts workers: run it under the shared lock
(helper rules)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest

from cli import experiment_client as experiment_cli
from tests.experiments.test_end_to_end import Service, assert_png


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_data_root) -> Iterator[Service]:
    running = Service(tmp_path_factory.mktemp("probes-e2e"), tiny_data_root)
    try:
        running.start(workers=2)
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop()


@pytest.fixture(scope="module")
def study(service) -> dict:
    out = io.StringIO()
    argv = ["--url", service.url, "--preset", "study-smoke", "--poll", "0.5", "--timeout", "600"]
    status = experiment_cli.main(argv, out)
    assert status == 0, f"{out.getvalue()}\n{service.logs()}"
    experiment_id = re.search(r"experiment ([0-9a-f]{32})", out.getvalue()).group(1)
    return service.get(f"/experiments/{experiment_id}")


def test_the_study_smoke_succeeds_with_every_job(study):
    assert study["status"] == "succeeded", study
    assert {j["status"] for j in study["jobs"]} == {"succeeded"}
    assert len(study["jobs"]) == 39


def test_the_summary_has_two_seeds_a_row_with_intervals(study):
    for row in study["summary"]:
        assert row["n"] == 2 and row["seeds"] == [0, 1]
        assert row["test_accuracy_ci95"] is not None and 0 <= row["test_accuracy_mean"] <= 1
        assert 1 <= row["epochs_run_mean"] <= 3


def test_layer_probes_have_a_row_per_block_from_the_probe_jobs_metrics(service, study):
    rows = study["layer_probes"]
    assert [r["block_name"] for r in rows] == ["stage1", "stage2", "stage3", "stage4"]
    for row in rows:
        assert row["n"] == 2 and row["features"] <= 4096
        assert row["accuracy_transferred_ci95"] is not None and row["accuracy_random_ci95"] is not None
        accuracies = {"finetune": [], "control": []}
        for job_id in row["job_ids"]:
            job = next(j for j in study["jobs"] if j["id"] == job_id)
            accuracies[job["role"]].append(service.get(f"/jobs/{job_id}/metrics")["evaluation"]["accuracy"])
        assert row["accuracy_transferred"] == pytest.approx(sum(accuracies["finetune"]) / 2)
        assert row["accuracy_random"] == pytest.approx(sum(accuracies["control"]) / 2)


def test_both_depth_plots_are_drawn(service, study):
    listing = service.get(f"/experiments/{study['id']}/artifacts")
    names = {a["name"] for a in listing["data"]}
    assert {"layer_probes.png", "transferability.png"} <= names
    for artifact in listing["data"]:
        if artifact["name"] in ("layer_probes.png", "transferability.png"):
            assert_png(service.client.get(artifact["url"]).content)


def test_section_9_names_the_best_probing_block_and_the_curves_best_depth(service, study):
    report = service.client.get(f"/experiments/{study['id']}/report").text
    best = max(study["layer_probes"], key=lambda r: r["accuracy_transferred"])
    assert f"The features after block {best['block']} ({best['block_name']}) probe best" in report
    assert "Transferability by depth" in report and "Best at " in report
    assert "layer_probes.png" in report and "transferability.png" in report
