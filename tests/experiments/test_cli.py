"""`transferlab experiment` without a server: presets are valid requests, options shape them, and a
service that is not there is a clear exit status 2. (The whole run is in test_end_to_end.py.)"""

from __future__ import annotations

import io
import json

import pytest

from service import experiment_cli
from service.experiments.plan import check_request, count_jobs
from service.experiments.schemas import ExperimentCreate


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return experiment_cli.main(list(argv), out), out.getvalue()


@pytest.mark.parametrize("preset, jobs", [("seed", 73), ("quick", 13), ("smoke", 13)])
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
