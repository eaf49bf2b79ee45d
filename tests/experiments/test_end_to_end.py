"""The `smoke` study end to end: `transferlab serve` (SQLite, the embedded broker) and two real worker
processes, driven by `transferlab experiment --preset smoke` over HTTP; then the table, every
artifact and the report's numbers are checked against what the API says was stored. And an
experiment cancelled while its pre-train runs.

The workers are plain `transferlab worker` processes: worker/tasks.py writes each job's plots from
its RunResult (only the worker has the test predictions) and advances the job's experiment when the
job ends (GET /experiments/{id} also advances it, as a safety net).
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from cli import experiment_client as experiment_cli
from core.artifacts import EXPERIMENT_ARTIFACTS, JOB_ARTIFACTS

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`transferlab serve --workers 0` plus worker processes, in a state folder of their own."""

    def __init__(self, home: Path, data_root: Path):
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERLAB_")}
        self.env.update(
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), self.env.get("PYTHONPATH")])),
            TRANSFERLAB_HOME=str(home),
            TRANSFERLAB_DATA_DIR=str(data_root),
            TRANSFERLAB_DEVICE="cpu",
            TRANSFERLAB_HEARTBEAT_SECONDS="1",
            TRANSFERLAB_STALE_AFTER_SECONDS="30",
        )
        self.processes: list[tuple[subprocess.Popen, Path]] = []
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = self.home / f"{len(self.processes):02d}-{name}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, *args], cwd=self.home, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.processes.append((process, log))
        return process

    def start(self, workers: int) -> None:
        port = self.url.rsplit(":", 1)[1]
        serve = self.spawn("serve", "-m", "cli.main", "serve", "--port", port, "--workers", "0")
        self._wait(lambda: self._ready(serve), "serve")
        for i in range(workers):
            worker = self.spawn(f"worker{i}", "-m", "cli.main", "worker")
            log = self.processes[-1][1]
            self._wait(lambda w=worker, log=log: self._alive(w) and b" ready." in log.read_bytes(), "worker")

    def _alive(self, process: subprocess.Popen) -> bool:
        if process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}\n{self.logs()}")
        return True

    def _ready(self, process: subprocess.Popen) -> bool:
        self._alive(process)
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def _wait(self, ready, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not ready within {timeout} s\n{self.logs()}")
            time.sleep(0.2)

    def get(self, path: str, **params) -> dict:
        response = self.client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def logs(self) -> str:
        return "\n".join(
            f"----- {log.name} -----\n{log.read_bytes()[-5000:].decode(errors='replace')}"
            for _, log in self.processes
        )

    def stop(self) -> None:
        self.client.close()
        for process, _ in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_data_root) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("experiments-e2e")
    running = Service(home, tiny_data_root)
    try:
        running.start(workers=2)  # the fine-tunes fan out over both
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop()


@pytest.fixture(scope="module")
def smoke(service, tmp_path_factory) -> dict:
    """Run the CLI's smoke preset to the end; its output, exit status and the finished experiment."""
    out = io.StringIO()
    folder = tmp_path_factory.mktemp("smoke-report")
    status = experiment_cli.main(
        [
            "--url",
            service.url,
            "--preset",
            "smoke",
            "--poll",
            "0.3",
            "--timeout",
            "240",
            "--out",
            str(folder),
        ],
        out,
    )
    text = out.getvalue()
    assert status == 0, f"{text}\n{service.logs()}"
    experiment_id = re.search(r"experiment ([0-9a-f]{32})", text).group(1)
    return {"output": text, "folder": folder, "experiment": service.get(f"/experiments/{experiment_id}")}


def assert_png(data: bytes) -> None:
    assert len(data) > 2048, len(data)
    image = Image.open(io.BytesIO(data))
    image.verify()
    assert image.format == "PNG"


def test_the_smoke_study_succeeds_with_a_full_comparison_table(smoke):
    experiment = smoke["experiment"]
    assert experiment["status"] == "succeeded", experiment
    comparison = experiment["comparison"]
    # 3 strategy variants x 2 learning rates x (fine-tune, control), after the pre-train.
    assert len(experiment["jobs"]) == 13 and experiment["jobs"][0]["role"] == "pretrain"
    assert len(comparison["rows"]) == 12
    assert {r["status"] for r in comparison["rows"]} == {"succeeded"}
    assert {r["variant"] for r in comparison["rows"] if r["chosen"]} == {"linear", "partial-2", "full"}
    assert comparison["best"]["variant"] in {"linear", "partial-2", "full"}
    assert [f["axis"] for f in comparison["hyperparameters"]] == ["lr"]
    linear = [r for r in comparison["rows"] if r["variant"] == "linear"]
    full = [r for r in comparison["rows"] if r["variant"] == "full"]
    assert max(r["trainable_parameters"] for r in linear) < min(r["trainable_parameters"] for r in full)


def test_the_table_holds_what_each_jobs_metrics_say(service, smoke):
    for row in smoke["experiment"]["comparison"]["rows"]:
        metrics = service.get(f"/jobs/{row['job_id']}/metrics")
        assert row["test_accuracy"] == metrics["evaluation"]["accuracy"]
        assert row["macro_f1"] == metrics["evaluation"]["macro_f1"]
        assert row["val_accuracy"] == [e for e in metrics["epochs"] if e["phase"] == "val"][-1]["accuracy"]
        assert row["train_seconds"] == metrics["cost"]["train_seconds"]
        assert row["parameter_updates"] == metrics["cost"]["parameter_updates"]
        if not row["control"]:
            control = service.get(f"/jobs/{row['control_job_id']}/metrics")
            assert row["transfer_gain"] == pytest.approx(
                metrics["evaluation"]["accuracy"] - control["evaluation"]["accuracy"]
            )


def test_every_job_has_its_four_plots_as_valid_pngs(service, smoke):
    # Depends on the worker hook (record_job_artifacts): only the worker has the test predictions.
    for job in smoke["experiment"]["jobs"]:
        listing = service.get(f"/jobs/{job['id']}/artifacts")
        assert sorted(a["name"] for a in listing["data"]) == sorted(JOB_ARTIFACTS), job
        for artifact in listing["data"]:
            assert_png(service.client.get(artifact["url"]).content)


def test_the_experiment_has_its_comparison_plots(service, smoke):
    experiment_id = smoke["experiment"]["id"]
    listing = service.get(f"/experiments/{experiment_id}/artifacts")
    # The smoke study has no layer probes and one partial depth: neither of the depth plots.
    drawn = set(EXPERIMENT_ARTIFACTS) - {"layer_probes.png", "transferability.png"}
    assert sorted(a["name"] for a in listing["data"]) == sorted(drawn)
    for artifact in listing["data"]:
        assert_png(service.client.get(artifact["url"]).content)


def test_the_reports_numbers_are_the_stored_metrics(service, smoke):
    experiment = smoke["experiment"]
    report = service.client.get(f"/experiments/{experiment['id']}/report").text
    allowed: set[str] = set()
    by_lr: dict[float, list[float]] = {}
    for job in experiment["jobs"]:
        metrics = service.get(f"/jobs/{job['id']}/metrics")
        allowed.add(f"{100 * metrics['evaluation']['accuracy']:.2f}%")
        val = [e["accuracy"] for e in metrics["epochs"] if e["phase"] == "val"]
        if val:
            allowed.add(f"{100 * val[-1]:.2f}%")
        if job["role"] == "finetune":
            by_lr.setdefault(job["lr"], []).append(val[-1])
    for values in by_lr.values():
        allowed |= {f"{100 * sum(values) / len(values):.2f}%", f"{100 * max(values):.2f}%"}

    printed = set(re.findall(r"\d+\.\d\d%", report))

    assert printed and printed <= allowed, printed - allowed
    best = experiment["comparison"]["best"]
    assert f"the best strategy is {best['variant']} ({100 * best['selection_value']:.2f}%)" in report
    pretrain = service.get(f"/jobs/{experiment['pretrain_job']}/metrics")
    seen = sum(round(e["images_per_second"] * e["seconds"]) for e in pretrain["epochs"])
    assert f"Pre-training saw {seen} STL-10 training images" in report  # 100 tiny images: 90 + 10


def test_the_html_report_embeds_every_plot_it_shows(service, smoke):
    html = service.client.get(
        f"/experiments/{smoke['experiment']['id']}/report", params={"format": "html"}
    ).text
    images = re.findall(r'src="data:image/png;base64,', html)
    # per-class F1, 3 confusion matrices, the best run's two grids, accuracy vs time and vs parameters
    assert len(images) == 8


def test_the_cli_prints_the_table_the_best_strategy_and_where_the_report_is(service, smoke):
    text, experiment_id = smoke["output"], smoke["experiment"]["id"]
    assert "variant" in text and "partial-2" in text and "gain pts" in text
    assert "Best strategy by validation accuracy (last epoch):" in text
    assert f"report: {service.url}/experiments/{experiment_id}/report" in text
    assert (smoke["folder"] / "report.md").read_text().startswith("# smoke study")
    assert "data:image/png;base64," in (smoke["folder"] / "report.html").read_text()


def test_cancelling_an_experiment_stops_its_running_pretrain_and_makes_no_fine_tune(service):
    body = {
        "name": "to cancel",
        "pretrain": {"dataset": "stl10", "model": "simple_cnn", "data": {"image_size": 16},
                     "hyperparameters": {"epochs": 1000, "batch_size": 10}},
        "data": {"image_size": 16},
        "hyperparameters": {"epochs": 1},
    }  # fmt: skip
    created = service.client.post("/experiments", json=body)
    assert created.status_code == 202, created.text
    experiment_id, pretrain_id = created.json()["id"], created.json()["pretrain_job"]
    deadline = time.monotonic() + 60
    while service.get(f"/jobs/{pretrain_id}")["current_epoch"] < 1:
        assert time.monotonic() < deadline, service.logs()
        time.sleep(0.2)

    response = service.client.post(f"/experiments/{experiment_id}/cancel")

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while (job := service.get(f"/jobs/{pretrain_id}"))["status"] not in TERMINAL:
        assert time.monotonic() < deadline, service.logs()
        time.sleep(0.2)
    assert job["status"] == "cancelled" and job["cancel_requested"]
    experiment = service.get(f"/experiments/{experiment_id}")
    assert experiment["status"] == "cancelled" and len(experiment["jobs"]) == 1
    assert service.client.post(f"/experiments/{experiment_id}/cancel").status_code == 409
