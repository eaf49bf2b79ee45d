"""The dashboard's pages as the server renders them (what a browser with JavaScript off reads), its
forms (the API's 422 beside the field), the vendored assets and the offline docs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from core.models import EpochMetric, JobStatus
from tests.formats import write_image_folder

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "service/ui"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def errors_of(html: str) -> dict[str, str]:
    """Field name (dashes) -> the message shown beside it."""
    return dict(re.findall(r'id="error-([\w-]+)" role="alert">([^<]+)<', html))


# ---------------------------------------------------------------- pages


def test_a_browser_asking_for_the_root_is_sent_to_the_dashboard(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui"


def test_the_experiments_list_shows_status_progress_best_strategy_and_when(client, ended_experiment):
    html = client.get("/ui").text
    best = ended_experiment["comparison"]["best"]
    assert ended_experiment["name"] in html and "status-succeeded" in html
    assert f'/ui/jobs/{best["job_id"]}">{best["variant"]}</a>' in html
    assert "80.00%" in html and "<time>" in html and 'value="1.000"' in html


def test_the_experiment_page_reads_without_javascript(client, ended_experiment):
    experiment_id = ended_experiment["id"]
    html = client.get(f"/ui/experiments/{experiment_id}").text
    rows = ended_experiment["comparison"]["rows"]
    assert all(f'data-job-id="{job["id"]}"' in html for job in ended_experiment["jobs"])  # one table
    assert 'id="experiment-jobs"' not in html  # ended: the comparison lists every job, no second table
    assert html.count('<tr class="chosen" data-job-id=') == sum(r["chosen"] for r in rows)
    assert "Transfer gains" in html and "+50.00" in html  # 80% against the controls' 30%
    assert "Per-class F1" in html and html.count('<table class="matrix">') >= 2  # matrices side by side
    assert f"/ui/experiments/{experiment_id}/report" in html
    assert "data-events" not in html  # it has ended: nothing to follow


def test_a_running_experiment_follows_its_stream_and_says_where_the_results_will_be(client, pretrained):
    from tests.experiments.conftest import body, create

    experiment = create(client, **body(pretrained_job=pretrained.id, strategies=["linear"]))
    html = client.get(f"/ui/experiments/{experiment['id']}").text
    assert f'data-events="/ui/experiments/{experiment["id"]}/events?after=0"' in html
    assert 'id="results-pending"' in html


def test_the_job_page_has_its_epochs_cost_matrix_plots_spec_and_cancel(client, ended_experiment, session):
    chosen = next(r for r in ended_experiment["comparison"]["rows"] if r["chosen"])
    html = client.get(f"/ui/jobs/{chosen['job_id']}").text
    assert html.count("data-key=") == 4  # 2 epochs x train and val, as a table
    assert '"epoch": [1, 2]' in html  # and as curves for uPlot
    assert "trainable parameters" in html and "peak memory" in html
    assert '<table class="matrix">' in html and "Per class" in html
    assert '"hyperparameters"' in html  # the spec
    assert "cancel-form" not in html  # it has ended


def test_a_running_job_has_a_cancel_button_that_cancels_it(client, make_job):
    job = make_job(status=JobStatus.running)
    html = client.get(f"/ui/jobs/{job.id}").text
    assert 'id="cancel-form"' in html and f'data-events="/ui/jobs/{job.id}/events"' in html

    response = client.post(
        f"/ui/jobs/{job.id}/cancel", data={"csrf_token": csrf_of(html)}, follow_redirects=False
    )

    assert response.status_code == 303 and response.headers["location"] == f"/ui/jobs/{job.id}"
    assert client.get(f"/jobs/{job.id}").json()["cancel_requested"] is True


def test_the_job_page_shows_the_api_404_as_a_page(client):
    response = client.get("/ui/jobs/nope")
    assert response.status_code == 404 and "job &#39;nope&#39; not found" in response.text


def test_the_checkpoints_page_lists_them_with_a_predict_panel(client, trained_checkpoint):
    html = client.get(f"/ui/checkpoints?checkpoint={trained_checkpoint.id}").text
    assert f'value="{trained_checkpoint.id}" data-size="32" data-channels="1" selected' in html
    assert 'id="draw"' in html and 'type="file" name="files" multiple' in html
    assert "drawn in this browser" in html  # it says the model input is rendered client-side


def test_compare_shows_only_the_settings_that_differ(client, ended_experiment):
    rows = [r for r in ended_experiment["comparison"]["rows"] if not r["control"]][:3]
    ids = ",".join(r["job_id"] for r in rows)
    html = client.get(f"/ui/compare?jobs={ids}").text
    differing = re.search(r'<table class="list settings">.*?</table>', html, re.S).group(0)
    assert "hyperparameters.lr" in differing and "strategy" in differing
    assert "dataset" not in differing and "hyperparameters.batch_size" not in differing
    assert html.count('data-measure="') == 4 and 'id="compare-data"' in html


@pytest.mark.parametrize("count", [1, 6])
def test_compare_takes_two_to_five_jobs(client, count):
    response = client.get("/ui/compare", params={"jobs": ",".join(f"j{i}" for i in range(count))})
    assert response.status_code == 422 and "give 2 to 5 job ids" in response.text


def test_the_jobs_list_filters_and_pages(client, make_job):
    for _ in range(3):
        make_job(status=JobStatus.succeeded)
    running = make_job(status=JobStatus.running)
    html = client.get("/ui/jobs?status=running").text
    assert html.count('<tr data-job-id="') == 1 and running.id in html
    assert 'hx-trigger="every 3s"' in html  # a running job: the list refreshes itself often
    assert client.get("/ui/jobs?status=&kind=").text.count('<tr data-job-id="') == 4  # the form's "any"
    assert client.get("/ui/jobs?status=nope").status_code == 422


# ---------------------------------------------------------------- forms


def test_a_bad_field_gets_the_apis_own_422_message_beside_it(client, enqueued):
    html = client.get("/ui/jobs/new").text
    form = {"csrf_token": csrf_of(html), "kind": "pretrain", "dataset": "stl10", "model": "simple_cnn",
            "hyperparameters.lr": "-1", "hyperparameters.epochs": "two"}  # fmt: skip

    response = client.post("/ui/jobs/new", data=form)

    api = client.post("/jobs", json={"kind": "pretrain", "hyperparameters": {"lr": -1}}).json()["detail"][0]
    assert response.status_code == 422 and enqueued == []
    errors = errors_of(response.text)
    assert errors["hyperparameters-lr"] == api["msg"] == "Input should be greater than 0"
    assert "valid integer" in errors["hyperparameters-epochs"]
    assert 'value="-1"' in response.text  # what was typed stays in the form


def test_the_forms_offer_folder_data_sets_beside_the_built_ins(client, env, tmp_path):
    root = tmp_path / "data"
    write_image_folder(root / "folders" / "pets")
    env(DATA_DIR=root)

    for page, select in (("/ui/jobs/new", "dataset"), ("/ui/experiments/new", "pretrain.dataset")):
        html = client.get(page).text
        options = re.search(rf'<select id="input-{select.replace(".", "-")}"[^>]*>(.*?)</select>', html, re.S)
        assert options is not None, page
        assert '<option value="pets">pets (folder)</option>' in options.group(1)
        assert '<option value="mnist"' in options.group(1)


def test_htmx_gets_the_form_alone_back_and_a_redirect_header_on_success(client, enqueued):
    csrf = csrf_of(client.get("/ui/jobs/new").text)
    headers = {"HX-Request": "true"}
    bad = client.post("/ui/jobs/new", data={"csrf_token": csrf, "kind": "pretrain", "data.image_size": "8"},
                      headers=headers)  # fmt: skip
    assert bad.status_code == 422 and bad.text.startswith('<form id="job-form"')
    assert "greater than or equal to 16" in errors_of(bad.text)["data-image_size"]

    good = client.post("/ui/jobs/new", data={"csrf_token": csrf, "kind": "pretrain", "model": "simple_cnn"},
                       headers=headers)  # fmt: skip
    assert good.status_code == 200 and good.headers["hx-redirect"] == f"/ui/jobs/{enqueued[0]}"


def test_a_finetune_of_a_missing_source_says_so_beside_the_source(client):
    csrf = csrf_of(client.get("/ui/jobs/new?kind=finetune").text)
    response = client.post("/ui/jobs/new", data={"csrf_token": csrf, "kind": "finetune", "source": "nope"})
    assert response.status_code == 404
    assert "job &#39;nope&#39; not found" in errors_of(response.text)["source"]


def test_an_experiment_from_a_preset_is_created_and_opened(client, enqueued):
    html = client.get("/ui/experiments/new?preset=smoke").text
    assert 'name="sweep.lr" value="0.01, 0.001"' in html
    form = {"csrf_token": csrf_of(html), "preset": "smoke", "name": "from the form", "controls": "1",
            "strategies": ["linear", "full"], "frozen_blocks": "", "sweep.lr": ""}  # fmt: skip

    response = client.post("/ui/experiments/new", data=form, follow_redirects=False)

    assert response.status_code == 303, errors_of(response.text)
    experiment = client.get(response.headers["location"].replace("/ui", "", 1)).json()
    assert experiment["name"] == "from the form" and experiment["request"]["strategies"] == ["linear", "full"]
    assert (
        experiment["request"]["sweep"] is None and experiment["request"]["pretrain"]["model"] == "simple_cnn"
    )
    assert len(enqueued) == 1  # the pre-train; the fine-tunes follow it


def test_an_experiment_rule_between_fields_is_shown_beside_the_field_it_names(client):
    html = client.get("/ui/experiments/new?preset=smoke").text
    form = {
        "csrf_token": csrf_of(html),
        "preset": "smoke",
        "name": "x",
        "strategies": ["linear"],
        "controls": "1",
    }

    response = client.post("/ui/experiments/new", data=form)

    assert (
        response.status_code == 422
        and "frozen_blocks applies to strategy" in errors_of(response.text)["frozen_blocks"]
    )


def test_a_form_without_its_csrf_token_is_refused(client, enqueued):
    response = client.post("/ui/jobs/new", data={"kind": "pretrain"})
    assert response.status_code == 403 and "CSRF" in response.text and enqueued == []


# ---------------------------------------------------------------- the polling fallback


def test_metrics_since_epoch_gives_only_the_later_epochs(client, make_job, session):
    job = make_job(status=JobStatus.running)
    for epoch in (1, 2, 3):
        session.add(EpochMetric(job_id=job.id, epoch=epoch, phase="train", loss=1.0, accuracy=0.5, lr=1e-3,
                                seconds=1.0, images_per_second=10.0))  # fmt: skip
    session.commit()
    body = client.get(f"/jobs/{job.id}/metrics?since_epoch=2").json()
    assert [e["epoch"] for e in body["epochs"]] == [3]
    assert client.get(f"/jobs/{job.id}/metrics?since_epoch=-1").status_code == 422


# ---------------------------------------------------------------- assets, docs, packaging


def test_the_dashboard_ships_at_most_300_kib_of_javascript_with_the_licences():
    scripts = list((UI / "static").rglob("*.js"))
    assert sum(p.stat().st_size for p in scripts) <= 300 * 1024
    vendor = UI / "static/vendor"
    assert (vendor / "htmx.LICENSE").is_file() and (vendor / "uPlot.LICENSE").is_file()


def test_no_page_loads_anything_from_another_host(client, ended_experiment):
    for path in ("/ui", f"/ui/experiments/{ended_experiment['id']}", "/ui/checkpoints", "/docs", "/redoc"):
        html = client.get(path).text
        assert re.findall(r'(?:src|href)="(https?:)?//', html) == [], path


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_load_their_assets_from_the_package(client, path):
    html = client.get(path).text
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', html)
    assert assets and all(client.get(asset).status_code == 200 for asset in assets)
    assert "cdn.jsdelivr" not in html and "fonts.googleapis" not in html


def test_the_large_docs_bundles_are_served_gzip_encoded_or_decompressed(client):
    """They are stored as .js.gz (no committed file over 1 MB); the bytes a browser runs are the same."""
    encoded = client.get("/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "gzip"})
    assert encoded.status_code == 200 and encoded.headers["content-encoding"] == "gzip"
    assert encoded.headers["content-type"].startswith("text/javascript")
    plain = client.get("/docs/assets/swagger-ui-bundle.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == encoded.content and len(plain.content) > 1_000_000  # httpx decoded the first
    assert client.get("/docs/assets/nothing-here.js").status_code == 404


def test_package_data_ships_every_template_and_static_file():
    """`pip install .` (not only -e) must carry them: each file matches a package-data pattern."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {  # setuptools' glob: `*` stays within a folder
        path
        for package, globs in patterns.items()
        for pattern in globs
        for path in (ROOT / package.replace(".", "/")).glob(pattern)
    }
    files = [p for folder in ("ui/templates", "ui/static", "docs_static")
             for p in (ROOT / "service" / folder).rglob("*") if p.is_file()]  # fmt: skip
    assert files and sorted(set(files) - shipped) == []


def test_an_experiment_with_repeats_shows_its_means_and_intervals(client, pretrained, finish_jobs):
    from tests.experiments.conftest import create

    experiment = create(client, pretrained_job=pretrained.id, strategies=["linear"], repeats=2)

    def score(job):  # two seeds that differ, so the intervals are not zero-width
        seed = job.spec["hyperparameters"]["seed"]
        return (None, 0.3 + 0.02 * seed) if job.spec["random_init"] else (0.9, 0.8 + 0.04 * seed)

    finish_jobs(experiment["id"], score)
    html = client.get(f"/ui/experiments/{experiment['id']}").text

    assert "Over the seeds" in html
    summary = client.get(f"/experiments/{experiment['id']}").json()["summary"]
    finetune = next(s for s in summary if s["role"] == "finetune")
    assert finetune["n"] == 2 and finetune["test_accuracy_ci95"] > 0
    assert f"&plusmn; {100 * finetune['test_accuracy_ci95']:.2f}" in html
    assert "(means of 2 seeds, 95% intervals)" in html
