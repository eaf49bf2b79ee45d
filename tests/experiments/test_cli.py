"""`transferlab experiment` without a server: presets are valid requests, options shape them, and a
service that is not there is a clear exit status 2. (The whole run is in test_end_to_end.py.)"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from cli import experiment_client as experiment_cli
from core.experiments.plan import check_request, count_jobs
from core.experiments.schemas import ExperimentCreate

ROW = {
    "job_id": "0123456789abcdef", "role": "finetune", "control": False, "status": "succeeded",
    "strategy": "partial", "variant": "partial-2", "frozen_blocks": 2, "optimizer": "adam", "lr": 0.001,
    "batch_size": 64, "epochs": 2, "val_accuracy": 0.9312, "test_accuracy": 0.9255, "macro_f1": 0.92,
    "train_seconds": 31.04, "trainable_parameters": 300_000, "total_parameters": 400_000,
    "parameter_updates": 15_000_000, "peak_memory_bytes": 300 * 2**20, "memory_device": "cpu",
    "transfer_gain": 0.031, "control_job_id": "fedcba9876543210", "chosen": True,
}  # fmt: skip


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return experiment_cli.main(list(argv), out), out.getvalue()


@pytest.mark.parametrize(
    "preset, jobs",
    [("seed", 73), ("seed-study", 109), ("quick", 13), ("smoke", 13), ("study", 58), ("study-smoke", 39)],
)
def test_every_preset_is_a_valid_request(preset, jobs):
    status, text = run("--preset", preset, "--print-request")

    request = ExperimentCreate.model_validate(json.loads(text))
    check_request(request)
    assert status == 0 and count_jobs(request) == jobs


def test_the_seed_preset_follows_the_seed():
    request = ExperimentCreate.model_validate(experiment_cli.PRESETS["seed"])
    assert request.pretrain.model.value == "resnet18" and request.data.image_size == 96
    assert request.data.train_samples is None  # the full data sets
    assert [o.value for o in request.sweep.optimizer] == ["adam", "rmsprop", "sgd"]


def test_options_reuse_a_pretrain_and_pick_strategies():
    status, text = run("--preset", "quick", "--pretrained-job", "abc", "--strategies", "linear,lp_ft",
                       "--no-controls", "--name", "mine", "--print-request")  # fmt: skip
    body = json.loads(text)

    assert status == 0
    assert "pretrain" not in body and body["pretrained_job"] == "abc"
    assert body["strategies"] == ["linear", "lp_ft"] and "frozen_blocks" not in body
    assert body["controls"] is False and body["name"] == "mine"


def test_an_unreachable_service_is_exit_status_2():
    status, text = run("--url", "http://127.0.0.1:9", "--preset", "smoke")

    assert status == 2 and "cannot talk to the service at http://127.0.0.1:9" in text


def test_the_url_defaults_to_transferlab_url(monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_URL", "http://example:1234")
    assert experiment_cli.build_parser().parse_args([]).url == "http://example:1234"
    monkeypatch.delenv("TRANSFERLAB_URL")
    assert experiment_cli.build_parser().parse_args([]).url == "http://127.0.0.1:8000"


def test_the_comparison_table_puts_the_units_in_its_headers():
    header, row = experiment_cli.comparison_table({"rows": [ROW]}).splitlines()

    assert header.split("  ")[0] == "variant" and "train s" in header and "peak MiB" in header
    assert "gain pts" in header and "val acc" not in header
    assert row.split() == [
        "partial-2", "finetune", "adam", "0.001", "64", "succeeded", "93.12%", "92.55%", "0.9200", "31.0",
        "300,000", "15,000,000", "300", "+3.10", "*",
    ]  # fmt: skip


def test_a_failed_run_shows_dashes_and_no_gain():
    measured = ["val_accuracy", "test_accuracy", "macro_f1", "train_seconds", "trainable_parameters",
                "parameter_updates", "peak_memory_bytes"]  # fmt: skip
    failed = {**ROW, "status": "failed", "chosen": False, "transfer_gain": None, **dict.fromkeys(measured)}

    line = experiment_cli.comparison_table({"rows": [ROW, failed]}).splitlines()[2]

    assert line.split() == ["partial-2", "finetune", "adam", "0.001", "64", "failed"] + ["-"] * 7


def test_the_best_sentence_names_the_gain_in_points():
    best = {"variant": "full", "measure": "validation accuracy (last epoch)", "selection_value": 0.97,
            "test_accuracy": 0.96, "transfer_gain": -0.01}  # fmt: skip

    assert experiment_cli.best_sentence({"best": best}) == (
        "Best strategy by validation accuracy (last epoch): full (97.00%); test accuracy 96.00%, "
        "-1.00 points over its control."
    )


def test_the_client_imports_neither_torch_nor_the_database():
    code = "import sys, cli.experiment_client; print('torch' in sys.modules, 'sqlalchemy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert result.stdout.split() == ["False", "False"]
