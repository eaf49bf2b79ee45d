"""What GET /metrics serves (Prometheus text format, prometheus-client), and the middleware that times
requests. README "Operations" says what each metric means.

Two kinds of numbers:
- this API process's own: requests and their latency per route template, /predict batch sizes, the
  model cache's hits, misses and evictions, and prometheus-client's process_* and python_* metrics.
  Each API process counts its own (scrape each one; `transferlab serve` runs one).
- the service's, read from the database at scrape time, so they are right whichever API process
  answers and however many there are: jobs by status and kind, the queue's depth, workers seen alive
  through their leases, and the duration, throughput and peak memory of finished jobs as histograms
  (one aggregate query each: a scrape costs the same with 10 jobs or 100,000).

The event streams (routes ending in /events: they last minutes) and /metrics itself are counted but
kept out of the latency histogram, which would otherwise say nothing about ordinary requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import service_stats as stats
from core.db import get_sessionmaker
from core.models import JobStatus
from core.service_stats import Distribution
from service.inference import get_predictor_cache

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

UNMATCHED = "(unmatched)"  # a path no route serves: one label value, not one per path tried
LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The limit is TRANSFERLAB_MAX_FILES_PER_REQUEST (64 by default, at most 1024).
BATCH_BUCKETS_IMAGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
JOB_SECONDS_BUCKETS = (10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
IMAGES_PER_SECOND_BUCKETS = (10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000)
PEAK_MEMORY_BUCKETS_BYTES = tuple(2**n for n in range(26, 38))  # 64 MiB .. 128 GiB

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to its response's last byte, by method and route template "
    "(event streams and /metrics left out).",
    ["method", "route"],
    buckets=LATENCY_BUCKETS_SECONDS,
    registry=REGISTRY,
)
PREDICT_BATCH = Histogram(
    "transferlab_predict_batch_images",
    "Images classified per answered /predict request.",
    buckets=BATCH_BUCKETS_IMAGES,
    registry=REGISTRY,
)


def untimed(route: str) -> bool:
    """Long-lived or self-referential routes stay out of the latency histogram."""
    return route == "/metrics" or route.endswith("/events")


def route_template(app: Any, scope: Scope) -> str:
    """The template of the route that served the request ("/jobs/{job_id}"), or of the one that
    would have (a request refused before routing: a 401, a 413)."""
    route = scope.get("route")
    if route is None:
        router = getattr(app, "router", None)
        for candidate in getattr(router, "routes", ()):
            match, _ = candidate.matches(scope)
            if match != Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: streaming responses are timed to their end)."""

    def __init__(self, app: ASGIApp, router_app: Any = None):
        self.app = app
        self.router_app = router_app  # the FastAPI app, for routes of requests refused before routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = route_template(self.router_app, scope)
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            if not untimed(route):
                HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


# ---------------------------------------------------------------- scraped from the model cache


class ModelCacheCollector(Collector):
    """The /predict model cache's counters, read when scraped."""

    def collect(self) -> Iterator[Metric]:
        cache = get_predictor_cache()
        for name, value, doc in (
            ("transferlab_model_cache_hits", cache.hits, "/predict requests served by a loaded model."),
            ("transferlab_model_cache_misses", cache.misses, "Checkpoint loads (a /predict cache miss)."),
            ("transferlab_model_cache_evictions", cache.evictions, "Loaded models dropped for newer ones."),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("transferlab_model_cache_models", "Models loaded now.", value=len(cache))


# ---------------------------------------------------------------- scraped from the database


def _histogram(
    name: str, doc: str, spread: list[Distribution], bounds: Sequence[float]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["kind"])
    for d in spread:
        points = [(str(float(bound)), float(n)) for bound, n in zip(bounds, d.under, strict=True)]
        family.add_metric([d.kind], [*points, ("+Inf", float(d.count))], sum_value=d.total)
    return family


def database_metrics(session: Session) -> list[Metric]:
    """Jobs, queue, workers and finished jobs' costs, as the database has them now (core/service_stats.py)."""
    counts = stats.job_counts(session)
    jobs = GaugeMetricFamily("transferlab_jobs", "Jobs by status and kind.", labels=["status", "kind"])
    for (status, kind), n in sorted(counts.items()):
        jobs.add_metric([status, kind], n)
    depth = GaugeMetricFamily(
        "transferlab_queue_depth",
        "Jobs queued and waiting for a worker (the database's count).",
        value=sum(n for (status, _), n in counts.items() if status == JobStatus.queued),
    )
    wait = GaugeMetricFamily(
        "transferlab_queue_oldest_seconds",
        "How long the oldest queued job has waited (0: none).",
        value=stats.oldest_queued_seconds(session),
    )
    experiments = GaugeMetricFamily("transferlab_experiments", "Experiments by status.", labels=["status"])
    for status, n in stats.experiment_counts(session).items():
        experiments.add_metric([status], n)
    workers = GaugeMetricFamily(
        "transferlab_workers_alive",
        "Workers holding a live lease (running a job now), by the device they train on.",
        labels=["device"],
    )
    for device, n in stats.live_workers(session).items():
        workers.add_metric([device], n)
    costs = [
        ("transferlab_job_duration_seconds", "Training plus evaluation seconds of each succeeded job.",
         "seconds", JOB_SECONDS_BUCKETS),
        ("transferlab_job_images_per_second",
         "Each succeeded job's mean training throughput over its epochs.",
         "images_per_second", IMAGES_PER_SECOND_BUCKETS),
        ("transferlab_job_peak_memory_bytes",
         "Each succeeded job's peak memory (CUDA allocator peak, or peak RSS on CPU).",
         "peak_memory_bytes", PEAK_MEMORY_BUCKETS_BYTES),
    ]  # fmt: skip
    histograms = [
        _histogram(name, doc, stats.cost_distribution(session, measure, bounds), bounds)
        for name, doc, measure, bounds in costs
    ]
    return [jobs, depth, wait, experiments, workers, *histograms]


class DatabaseCollector(Collector):
    """The database's numbers at scrape time; `transferlab_database_up 0` (and none of them) when it
    cannot be read, so a down database is a metric, not a failed scrape."""

    def collect(self) -> Iterator[Metric]:
        try:
            with get_sessionmaker()() as session:
                metrics = database_metrics(session)
        except Exception as exc:
            log.warning("/metrics: the database could not be read: %s", exc)
            metrics = []
        yield GaugeMetricFamily(
            "transferlab_database_up", "1 when the database answered.", value=int(bool(metrics))
        )
        yield from metrics


REGISTRY.register(ModelCacheCollector())
REGISTRY.register(DatabaseCollector())


def render() -> bytes:
    """The whole registry in the Prometheus text format."""
    return generate_latest(REGISTRY)
