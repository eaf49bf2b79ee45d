"""The dashboard's experiment page with 1,000 jobs: how long the server takes to render it.

    python -m bench.ui_render                      # 1,000 jobs, 20 timed renders after 3 warm-ups
    python -m bench.ui_render --jobs 200 --runs 5  # what tests/ui runs to keep this working

Inserts, in a temporary SQLite database, one ended experiment: its pre-train and jobs-1 fine-tunes
and controls, each with what a worker leaves (4 epoch rows, an evaluation with 10 classes and a
10x10 confusion matrix, a cost row). Then times, in process (TestClient):
- GET /ui/experiments/{id} as it is served again and again: an ended experiment's view and its
  rendered results are kept (neither can change), so this is the header and a kept string;
- the first render, with nothing kept (after a restart): the API's own get_experiment with the
  comparison of every row (core.experiments.compare), the chosen runs' matrices, Jinja; and its
  two parts on their own, the data (service.ui.views.experiment_page) and the templates;
- GET /experiments/{id}, the JSON the page reads, for scale.
Each figure is the median (and p90) over --runs after --warmup. --collector off measures the same
with Python's cyclic garbage collector disabled, to show its share.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 300.0
STRATEGIES = ("linear", "partial", "full", "lp_ft")
LRS = (0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001, 0.00003, 0.00001)


def _spec(strategy: str, lr: float, control: bool) -> dict[str, Any]:
    return {
        "kind": "finetune", "dataset": "mnist", "strategy": strategy,
        "frozen_blocks": 2 if strategy == "partial" else None, "random_init": control,
        "hyperparameters": {"epochs": 2, "batch_size": 128, "optimizer": "adam", "lr": lr},
        "data": {"image_size": 32},
    }  # fmt: skip


def insert_experiment(jobs: int) -> str:
    """An ended experiment of `jobs` jobs with every row a worker writes; its id."""
    from core.db import get_sessionmaker
    from core.models import Cost, EpochMetric, Evaluation, Experiment, Job

    request = {
        "name": "bench",
        "pretrain": {"model": "simple_cnn"},
        "strategies": list(STRATEGIES),
        "sweep": {"lr": list(LRS)},
    }
    with get_sessionmaker()() as session:
        experiment = Experiment(
            name=f"{jobs} jobs",
            status="succeeded",
            request=request,
            dataset="mnist",
            architecture="simple_cnn",
        )
        session.add(experiment)
        session.flush()
        pretrain = Job(
            kind="pretrain",
            status="succeeded",
            spec={"kind": "pretrain", "hyperparameters": {"epochs": 1}, "data": {"image_size": 32}},
            dataset="stl10",
            architecture="simple_cnn",
            experiment_id=experiment.id,
            role="pretrain",
            progress=1.0,
        )
        session.add(pretrain)
        session.flush()
        experiment.pretrain_job_id = pretrain.id
        for n in range(jobs - 1):
            strategy, lr, control = STRATEGIES[n // 2 % 4], LRS[n // 8 % 8], n % 2 == 1
            accuracy = 0.5 + 0.4 * ((n * 7919) % 1000) / 1000 - (0.2 if control else 0.0)
            job = Job(
                kind="finetune",
                status="succeeded",
                spec=_spec(strategy, lr, control),
                dataset="mnist",
                architecture="simple_cnn",
                strategy=strategy,
                source_job_id=pretrain.id,
                experiment_id=experiment.id,
                role="control" if control else "finetune",
                progress=1.0,
                current_epoch=2,
            )
            session.add(job)
            session.flush()
            for epoch in (1, 2):
                for phase in ("train", "val"):
                    session.add(
                        EpochMetric(
                            job_id=job.id,
                            epoch=epoch,
                            phase=phase,
                            loss=1 / epoch,
                            accuracy=accuracy,
                            lr=lr,
                            seconds=3.0,
                            images_per_second=900.0,
                        )
                    )
            per_class = [
                {"label": str(c), "precision": accuracy, "recall": accuracy, "f1": accuracy, "support": 100}
                for c in range(10)
            ]
            matrix = [
                [int(100 * accuracy) if r == c else int(100 * (1 - accuracy) / 9) for c in range(10)]
                for r in range(10)
            ]
            session.add(
                Evaluation(
                    job_id=job.id,
                    accuracy=accuracy,
                    macro_f1=accuracy,
                    weighted_f1=accuracy,
                    per_class=per_class,
                    confusion_matrix=matrix,
                )
            )
            session.add(
                Cost(
                    job_id=job.id,
                    train_seconds=6.0 + n % 5,
                    eval_seconds=0.4,
                    trainable_parameters=1290,
                    total_parameters=400_000,
                    parameter_updates=1290 * 160,
                    peak_memory_bytes=2**28,
                    memory_device="cpu",
                )
            )
        session.commit()
        return experiment.id


@contextmanager
def _settings(**variables: str) -> Iterator[None]:
    """Only these TRANSFERLAB_ variables while measuring; the settings and engine caches read afresh."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from core.db import get_engine, reset_caches
    from core.settings import get_settings

    saved = {name: os.environ.pop(name) for name in [n for n in os.environ if n.startswith("TRANSFERLAB_")]}
    os.environ.update(variables)
    get_settings.cache_clear()
    reset_caches()
    try:
        yield
    finally:
        get_engine().dispose()
        for name in variables:
            os.environ.pop(name, None)
        os.environ.update(saved)
        get_settings.cache_clear()
        reset_caches()


def timed(fn: Callable[[], Any], runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
    times.sort()
    return {
        "median_ms": statistics.median(times),
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
    }


def timed_live(client: Any, url: str, experiment_id: str, runs: int, warmup: int) -> dict[str, float]:
    """The same experiment while it runs (half of its jobs still running): no comparison yet, the
    jobs table with their progress, and the stream to follow."""
    from sqlalchemy import update

    from core.db import get_sessionmaker
    from core.models import Experiment, Job

    with get_sessionmaker()() as session:
        session.execute(update(Experiment).where(Experiment.id == experiment_id).values(status="running"))
        session.execute(
            update(Job)
            .where(Job.experiment_id == experiment_id, Job.role == "control")
            .values(status="running")
        )
        session.commit()
    from service.ui import routes, views

    views._ended_experiments.clear()  # it "ended" above; a real experiment never runs again
    routes._ended_results_html.clear()
    assert "data-events" in client.get(url).text
    return timed(lambda: client.get(url), runs, warmup)


def measure(jobs: int, runs: int, warmup: int, collector: bool = True) -> dict[str, Any]:
    from fastapi.testclient import TestClient
    from markupsafe import Markup

    from core import migrate
    from core.db import get_sessionmaker
    from service.main import create_app
    from service.ui import routes, views

    migrate.upgrade()
    experiment_id = insert_experiment(jobs)
    client = TestClient(create_app())
    client.__enter__()  # the app's start-up, as `transferlab serve` runs it (the engine import, gc.freeze)
    for thread in threading.enumerate():
        if thread.name == "engine-import":
            thread.join()
    url = f"/ui/experiments/{experiment_id}"
    page = client.get(url)
    assert page.status_code == 200 and page.text.count("data-job-id=") == jobs - 1  # all but the pre-train

    def cold() -> None:  # as after a restart: nothing of the ended experiment is kept yet
        views._ended_experiments.clear()
        routes._ended_results_html.clear()
        client.get(url)

    def data() -> dict[str, Any]:
        with get_sessionmaker()() as session:
            return views.experiment_page(session, experiment_id)

    context = data()
    page_template = routes.templates.get_template("experiment.html")
    results_template = routes.templates.get_template("_experiment_results.html")
    extras = {"base": "", "csrf": "x", "csrf_field": "csrf_token", "token_set": False, "path": "/ui"}

    def templates() -> None:  # both, nothing kept
        results = Markup(results_template.render(**context, base=""))
        page_template.render(**context, **extras, results_html=results)

    if not collector:  # how much of it is Python's cyclic garbage collector
        gc.disable()
    try:
        return {
            "jobs": jobs,
            "html_bytes": len(page.content),
            "page (GET /ui/experiments/{id})": timed(lambda: client.get(url), runs, warmup),
            "first render (nothing kept yet)": timed(cold, runs, warmup),
            "its data, nothing kept": timed(lambda: (views._ended_experiments.clear(), data()), runs, warmup),
            "its templates, nothing kept (Jinja)": timed(templates, runs, warmup),
            "GET /experiments/{id} (JSON)": timed(
                lambda: client.get(f"/experiments/{experiment_id}"), runs, warmup
            ),
            "a live experiment (its jobs table)": timed_live(client, url, experiment_id, runs, warmup),
        }
    finally:
        gc.enable()
        client.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--collector", choices=("on", "off"), default="on", help="off: gc.disable() first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as home, _settings(TRANSFERLAB_HOME=home):
        result = measure(args.jobs, args.runs, args.warmup, collector=args.collector == "on")
    cpu = platform.processor() or platform.machine()
    result["machine"] = f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"experiment page, {result['jobs']} jobs, {result['html_bytes'] / 1024:.0f} KiB of HTML "
          f"({result['machine']}); median of {args.runs} after {args.warmup} warm-ups:")  # fmt: skip
    for name, value in result.items():
        if isinstance(value, dict):
            print(f"  {name:36s} {value['median_ms']:7.1f} ms   p90 {value['p90_ms']:7.1f} ms")
    for name in ("page (GET /ui/experiments/{id})", "first render (nothing kept yet)"):
        median = result[name]["median_ms"]
        print(f"target < {TARGET_MS:.0f} ms, {name}: {'met' if median < TARGET_MS else 'NOT met'}")
    os_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result["load_average_1min"] = os_load
    print(f"load average while measuring: {os_load:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
