"""GET /metrics: Prometheus text that prometheus-client's own parser reads; request counts and latency
per route template (streams and /metrics left out of the latency), /predict batch sizes and the
model cache, and the database's numbers read at scrape time; the token unless it is made public."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

from core.models import EpochMetric, JobStatus, utcnow
from tests.rows import cost_row
from tests.service.conftest import TOKEN
from tests.service.test_predict import png, post


def scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label pairs: value}} of one scrape."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_parse_and_name_the_documented_families(client):
    samples = scrape(client)

    for name in (
        "transferlab_jobs",
        "transferlab_queue_depth",
        "transferlab_queue_oldest_seconds",
        "transferlab_model_cache_hits_total",
        "transferlab_model_cache_misses_total",
        "transferlab_model_cache_evictions_total",
        "transferlab_database_up",
        "process_resident_memory_bytes",
    ):
        assert name in samples, name
    assert value(samples, "transferlab_database_up") == 1.0


def test_a_route_template_histogram_grows_with_its_requests(client, make_job):
    job = make_job()
    route = {"method": "GET", "route": "/jobs/{job_id}"}
    before = scrape(client)

    for _ in range(3):
        assert client.get(f"/jobs/{job.id}").status_code == 200
    after = scrape(client)

    count = "http_request_duration_seconds_count"
    assert value(after, count, **route) - value(before, count, **route) == 3
    top = value(after, "http_request_duration_seconds_bucket", **route, le="+Inf")
    assert top - value(before, "http_request_duration_seconds_bucket", **route, le="+Inf") == 3
    assert (
        value(after, "http_requests_total", **route, status="200")
        - value(before, "http_requests_total", **route, status="200")
        == 3
    )
    # One label per template, not per job id.
    assert not any(f"/jobs/{job.id}" in str(labels) for labels in after["http_requests_total"])


def test_event_streams_and_metrics_are_counted_but_not_timed(client, make_job):
    job = make_job(status=JobStatus.succeeded)
    with client.stream("GET", f"/jobs/{job.id}/events") as stream:
        assert stream.status_code == 200
        for _ in stream.iter_lines():
            pass  # an ended job's stream sends its status and end, then closes
    samples = scrape(client)
    scrape(client)

    durations = samples["http_request_duration_seconds_count"]
    timed = {dict(labels)["route"] for labels in durations}
    # /metrics itself and the streams stay out; a job's JSON metrics (/jobs/{job_id}/metrics) do not
    assert "/metrics" not in timed and not any(route.endswith("/events") for route in timed)
    assert (
        value(samples, "http_requests_total", method="GET", route="/jobs/{job_id}/events", status="200") >= 1
    )
    assert value(scrape(client), "http_requests_total", method="GET", route="/metrics", status="200") >= 2


def test_jobs_by_status_and_kind_and_the_queue_come_from_the_database(client, make_job):
    for status in (JobStatus.queued, JobStatus.queued, JobStatus.failed):
        make_job(status=status)
    make_job(status=JobStatus.succeeded, kind="finetune", dataset="mnist")

    samples = scrape(client)

    assert value(samples, "transferlab_jobs", status="queued", kind="pretrain") == 2
    assert value(samples, "transferlab_jobs", status="failed", kind="pretrain") == 1
    assert value(samples, "transferlab_jobs", status="succeeded", kind="finetune") == 1
    assert value(samples, "transferlab_jobs", status="running", kind="pretrain") == 0  # shown at 0
    assert value(samples, "transferlab_queue_depth") == 2
    assert value(samples, "transferlab_queue_oldest_seconds") > 0


def test_workers_alive_are_those_with_a_live_lease_by_device(client, make_job):
    soon, past = utcnow() + timedelta(minutes=1), utcnow() - timedelta(minutes=1)
    make_job(status=JobStatus.running, worker="gpu-host:1", device="cuda:0", lease_expires_at=soon)
    make_job(status=JobStatus.running, worker="gpu-host:2", device="cuda:1", lease_expires_at=soon)
    make_job(status=JobStatus.running, worker="cpu-host:3", device="cpu", lease_expires_at=past)  # dead

    samples = scrape(client)

    assert value(samples, "transferlab_workers_alive", device="cuda:0") == 1
    assert value(samples, "transferlab_workers_alive", device="cuda:1") == 1
    assert value(samples, "transferlab_workers_alive", device="cpu") == 0


def test_finished_jobs_fill_the_duration_throughput_and_memory_histograms(client, make_job, session):
    for seconds, images_per_second, peak in ((20.0, 500.0, 2**27), (400.0, 5000.0, 2**31)):
        job = make_job(status=JobStatus.succeeded)
        session.add(
            cost_row(
                job.id,
                train_seconds=seconds - 1,
                trainable_parameters=10,
                total_parameters=10,
                parameter_updates=100,
                peak_memory_bytes=peak,
            )  # fmt: skip
        )
        for epoch in (1, 2):
            session.add(
                EpochMetric(
                    job_id=job.id,
                    epoch=epoch,
                    phase="train",
                    loss=1.0,
                    accuracy=0.5,
                    lr=0.01,
                    seconds=1.0,
                    images_per_second=images_per_second,
                )
            )
    session.commit()

    samples = scrape(client)

    pretrain = {"kind": "pretrain"}
    assert value(samples, "transferlab_job_duration_seconds_count", **pretrain) == 2
    assert value(samples, "transferlab_job_duration_seconds_sum", **pretrain) == 420.0
    assert value(samples, "transferlab_job_duration_seconds_bucket", **pretrain, le="30.0") == 1
    assert value(samples, "transferlab_job_duration_seconds_bucket", **pretrain, le="600.0") == 2
    assert value(samples, "transferlab_job_images_per_second_bucket", **pretrain, le="1000.0") == 1
    assert value(samples, "transferlab_job_images_per_second_sum", **pretrain) == 5500.0
    assert value(samples, "transferlab_job_peak_memory_bytes_bucket", **pretrain, le=f"{float(2**28)}") == 1
    assert value(samples, "transferlab_job_peak_memory_bytes_count", **pretrain) == 2


def test_predict_batch_sizes_and_the_model_cache_are_counted(client, trained_checkpoint):
    before = scrape(client)

    assert (
        post(
            client, [("a.png", png()), ("b.png", png()), ("c.png", png())], checkpoint=trained_checkpoint.id
        ).status_code
        == 200
    )
    assert post(client, [("a.png", png())], checkpoint=trained_checkpoint.id).status_code == 200
    after = scrape(client)

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("transferlab_predict_batch_images_count") == 2
    assert grew("transferlab_predict_batch_images_sum") == 4
    assert grew("transferlab_predict_batch_images_bucket", le="2.0") == 1
    assert (
        grew("transferlab_model_cache_misses_total") == 1 and grew("transferlab_model_cache_hits_total") == 1
    )
    assert value(after, "transferlab_model_cache_models") == 1


def test_metrics_need_the_token_when_one_is_set(client, env):
    env(API_TOKEN=TOKEN)

    assert client.get("/metrics").status_code == 401
    assert "transferlab_jobs" in scrape(client, Authorization=f"Bearer {TOKEN}")


def test_metrics_can_be_made_public(client, env):
    env(API_TOKEN=TOKEN, METRICS_PUBLIC="true")

    assert "transferlab_jobs" in scrape(client)
    assert client.get("/jobs").status_code == 401  # only /metrics is opened
