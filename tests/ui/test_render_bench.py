"""bench/ui_render.py keeps working (a small run; the 1,000-job figure is in docs/performance.md),
and an ended experiment's page is kept while a running one's is read afresh."""

from __future__ import annotations

import json

from core.models import JobStatus
from service.ui import views


def test_the_render_benchmark_runs_and_reports_each_part(tmp_path, env):
    from bench import ui_render

    out = tmp_path / "result.json"
    ui_render.main(["--jobs", "40", "--runs", "2", "--warmup", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["jobs"] == 40
    assert {"median_ms", "p90_ms"} <= set(result["page (GET /ui/experiments/{id})"])


def test_a_running_experiment_is_read_afresh_and_an_ended_one_is_kept(client, pretrained, session):
    from tests.experiments.conftest import body, create

    experiment = create(client, **body(pretrained_job=pretrained.id, strategies=["linear"], controls=False))
    client.get(f"/ui/experiments/{experiment['id']}")
    assert views._ended_experiments.get(experiment["id"]) is None

    from core.models import Experiment, Job

    for job in session.query(Job).filter(Job.experiment_id == experiment["id"]):
        job.status = JobStatus.failed
    session.get(Experiment, experiment["id"]).status = "failed"
    session.commit()
    html = client.get(f"/ui/experiments/{experiment['id']}").text
    assert "status-failed" in html and views._ended_experiments.get(experiment["id"]) is not None
