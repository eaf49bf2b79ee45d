"""What each dashboard page shows, read through the API's own route functions (the same rows, rules
and redactions as the JSON), plus what only a page needs: shaded matrices, curves, differing settings.

Every function takes an open session and returns a plain dict for its template.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.experiments.compare import build_comparison
from core.experiments.schemas import Comparison, ComparisonRow
from core.models import (
    EXPERIMENT_TERMINAL,
    TERMINAL_STATUSES,
    Checkpoint,
    EpochMetric,
    Evaluation,
    Experiment,
    Job,
    JobStatus,
)
from core.settings import get_settings
from service.experiment_schemas import ExperimentPublic
from service.lru import LRU
from service.routes import artifacts as artifact_routes
from service.routes import checkpoints as checkpoint_routes
from service.routes import experiments as experiment_routes
from service.routes import jobs as job_routes
from service.schemas import EpochMetricPublic, JobPublic, MetricsPublic
from service.ui.lttb import MAX_POINTS, lttb_indices

PAGE_SIZE = 50
COMPARE_MIN, COMPARE_MAX = 2, 5

# An experiment whose jobs have all ended never changes again (no transition leaves a terminal status),
# so what its page reads is kept: the comparison of 1,000 rows is most of a first render (bench/ui_render.py).
_ended_experiments = LRU(capacity=16)
_best_of_ended = LRU(capacity=4096)


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES or status in EXPERIMENT_TERMINAL


# ---------------------------------------------------------------- small shapes for templates


def shaded_matrix(matrix: Sequence[Sequence[int]]) -> list[list[tuple[int, float, bool]]]:
    """(count, share of its row 0..1, on the diagonal) per cell: the shade of a confusion matrix."""
    shaded = []
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        shaded.append([(int(n), n / total, i == j) for j, n in enumerate(row)])
    return shaded


def curves(epochs: Iterable[EpochMetricPublic]) -> dict[str, Any]:
    """uPlot-ready columns: x = epoch, one column per phase and measure (None where missing),
    downsampled with LTTB past MAX_POINTS epochs."""
    by_epoch: dict[int, dict[str, EpochMetricPublic]] = {}
    for row in epochs:
        by_epoch.setdefault(row.epoch, {})[row.phase] = row
    xs = sorted(by_epoch)
    columns: dict[str, list[float | None]] = {}
    for phase in ("train", "val"):
        for measure in ("loss", "accuracy", "lr", "images_per_second"):
            column = [getattr(by_epoch[x].get(phase), measure, None) for x in xs]
            if any(v is not None for v in column):
                columns[f"{phase}_{measure}"] = column
    if len(xs) > MAX_POINTS:
        primary = columns.get("train_loss") or [0.0] * len(xs)
        keep = lttb_indices([float(x) for x in xs], [v or 0.0 for v in primary], MAX_POINTS)
        xs = [xs[i] for i in keep]
        columns = {name: [column[i] for i in keep] for name, column in columns.items()}
    return {"epoch": xs, **columns}


def as_json(value: Any) -> Markup:
    """JSON for a <script type="application/json"> block, where entities are not decoded: not
    HTML-escaped, but with no `</` that could close the tag early."""
    return Markup(json.dumps(value, default=str).replace("</", "<\\/"))


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, Mapping):
            flat.update(flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


# ---------------------------------------------------------------- pages


def experiments_page(session: Session, skip: int) -> dict[str, Any]:
    listing = experiment_routes.list_experiments(session, skip=skip, limit=PAGE_SIZE)
    best = {e.id: best_strategy(session, e.id, e.job_counts) for e in listing.data}
    active = any(not is_terminal(e.status) for e in listing.data)
    return {"experiments": listing.data, "count": listing.count, "skip": skip, "best": best, "active": active}


def best_strategy(session: Session, experiment_id: str, job_counts: Mapping[str, int]) -> Any:
    """The comparison's best strategy once the experiment has ended. Reading it for the list also keeps
    the experiment's whole view, so opening it from the list is a warm render."""
    found = _best_of_ended.get(experiment_id)
    if found is not None:
        return found[0]
    experiment = session.get(Experiment, experiment_id)
    if experiment is None or experiment.status not in EXPERIMENT_TERMINAL:
        return None
    if job_counts.get(JobStatus.queued) or job_counts.get(JobStatus.running):  # a cancel still landing
        return build_comparison(session, experiment).best
    comparison = experiment_view(session, experiment_id)["experiment"].comparison
    best = comparison.best if comparison is not None else None
    _best_of_ended.put(experiment_id, (best,))
    return best


def has_ended(experiment: ExperimentPublic) -> bool:
    """The experiment and every one of its jobs have ended: nothing about it changes any more."""
    counts = experiment.job_counts
    return experiment.status in EXPERIMENT_TERMINAL and not counts.get("queued") and not counts.get("running")


def experiment_view(session: Session, experiment_id: str) -> dict[str, Any]:
    """GET /experiments/{id}, its plots and the chosen runs' matrices; kept once it has ended (its
    plots are committed with its final status, so they are final too)."""
    view = _ended_experiments.get(experiment_id)
    if view is None:
        experiment = experiment_routes.get_experiment(session=session, experiment_id=experiment_id)
        artifacts = artifact_routes.list_experiment_artifacts(session=session, experiment_id=experiment_id)
        view = {
            "experiment": experiment,
            "artifacts": artifacts.data,
            "terminal": has_ended(experiment),
            **comparison_extras(session, experiment.comparison),
        }
        if view["terminal"]:
            _ended_experiments.put(experiment_id, view)
    return view


def experiment_page(session: Session, experiment_id: str) -> dict[str, Any]:
    view = experiment_view(session, experiment_id)
    last_epoch_row_id = 0  # a live page has no epoch rows: its stream skips those already written
    if not view["terminal"]:
        in_experiment = select(Job.id).where(Job.experiment_id == experiment_id)
        last_epoch_row_id = (
            session.scalar(select(func.max(EpochMetric.id)).where(EpochMetric.job_id.in_(in_experiment))) or 0
        )
    return {**view, "last_epoch_row_id": last_epoch_row_id}


def comparison_extras(session: Session, comparison: Comparison | None) -> dict[str, Any]:
    """The chosen run of each variant with its control: per-class F1 and confusion matrices side by
    side, transfer gains; the ids the compare page can take."""
    if comparison is None:
        return {"chosen": [], "gains": [], "compare_ids": []}
    rows = {row.job_id: row for row in comparison.rows}
    chosen_rows = [row for row in comparison.rows if row.chosen]
    shown: list[ComparisonRow] = []
    for row in chosen_rows:
        shown.append(row)
        if row.control_job_id and row.control_job_id in rows:
            shown.append(rows[row.control_job_id])
    evaluations = {
        e.job_id: e
        for e in session.scalars(select(Evaluation).where(Evaluation.job_id.in_([r.job_id for r in shown])))
    }
    chosen = [
        {
            "row": row,
            "name": f"{row.variant} control" if row.control else row.variant,
            "per_class": evaluations[row.job_id].per_class,
            "matrix": shaded_matrix(evaluations[row.job_id].confusion_matrix),
        }
        for row in shown
        if row.job_id in evaluations
    ]
    gains = [
        {"row": row, "control": rows.get(row.control_job_id or "")}
        for row in chosen_rows
        if row.transfer_gain is not None
    ]
    return {"chosen": chosen, "gains": gains, "compare_ids": [r.job_id for r in chosen_rows][:COMPARE_MAX]}


def job_page(session: Session, job_id: str) -> dict[str, Any]:
    job = job_routes.get_job(session=session, job_id=job_id)
    metrics = job_routes.get_metrics(session=session, job_id=job_id, since_epoch=0)
    row = session.get(Job, job_id)
    assert row is not None  # get_job answered
    return {
        "job": job,
        "experiment_id": row.experiment_id,
        "role": row.role,
        "terminal": is_terminal(job.status),
        **job_results(session, job, metrics),
    }


def job_results(session: Session, job: JobPublic, metrics: MetricsPublic) -> dict[str, Any]:
    """What a job shows once it has ended (evaluation, cost, plots), and its epochs."""
    evaluation = metrics.evaluation
    return {
        "metrics": metrics,
        "curves": curves(metrics.epochs),
        "matrix": shaded_matrix(evaluation.confusion_matrix) if evaluation else None,
        "labels": [c.label for c in evaluation.per_class] if evaluation else [],
        "artifacts": artifact_routes.list_job_artifacts(
            session=session, settings=get_settings(), job_id=job.id
        ).data,
    }


def job_results_page(session: Session, job_id: str) -> dict[str, Any]:
    job = job_routes.get_job(session=session, job_id=job_id)
    metrics = job_routes.get_metrics(session=session, job_id=job_id, since_epoch=0)
    return {"job": job, **job_results(session, job, metrics)}


def jobs_page(session: Session, status: JobStatus | None, kind: Any, skip: int) -> dict[str, Any]:
    listing = job_routes.list_jobs(session, status_=status, kind=kind, skip=skip, limit=PAGE_SIZE)
    active = any(not is_terminal(j.status) for j in listing.data)
    return {
        "jobs": listing.data,
        "count": listing.count,
        "skip": skip,
        "status": status,
        "kind": kind,
        "active": active,
    }


def checkpoints_page(session: Session, skip: int, selected: str | None) -> dict[str, Any]:
    listing = checkpoint_routes.list_checkpoints(session, skip=skip, limit=PAGE_SIZE)
    checkpoints = list(listing.data)
    if selected and all(c.id != selected for c in checkpoints):
        row = session.get(Checkpoint, selected)
        if row is not None:
            checkpoints.insert(0, checkpoint_routes.get_checkpoint(session=session, checkpoint_id=selected))
    return {
        "checkpoints": checkpoints,
        "count": listing.count,
        "skip": skip,
        "selected": selected or (checkpoints[0].id if checkpoints else None),
    }


def compare_page(session: Session, job_ids: list[str]) -> dict[str, Any]:
    """2-5 jobs: the settings that differ, their results, their curves on shared axes."""
    jobs = [job_routes.get_job(session=session, job_id=job_id) for job_id in job_ids]
    metrics = [job_routes.get_metrics(session=session, job_id=job_id, since_epoch=0) for job_id in job_ids]
    settings = [
        flatten(
            {
                "kind": j.kind,
                "dataset": j.dataset,
                "architecture": j.architecture,
                "strategy": j.strategy,
                "source": j.source,
                **{k: v for k, v in j.spec.items() if k not in ("kind", "dataset")},
            }
        )
        for j in jobs
    ]
    keys = sorted({key for s in settings for key in s})
    differing = [key for key in keys if len({json.dumps(s.get(key), default=str) for s in settings}) > 1]
    same = [key for key in keys if key not in differing]
    series = [
        {"label": f"{j.id[:8]} {j.strategy or j.kind}", "curves": curves(m.epochs)}
        for j, m in zip(jobs, metrics, strict=True)
    ]
    return {
        "jobs": jobs,
        "metrics": metrics,
        "settings": settings,
        "differing": differing,
        "same": same,
        "series": series,
        "active": any(not is_terminal(j.status) for j in jobs),
    }


def dataset_choices() -> list[tuple[str, str]]:
    """(name, label) of every data set a job can use: the built-ins, then the folder data sets found
    under the data root (uploaded with POST /datasets or copied there), so the forms offer them too."""
    from engine.datasets import DATASETS, dataset_names

    return [(n, n if n in DATASETS else f"{n} (folder)") for n in dataset_names(get_settings().data_root)]


def source_choices(session: Session, kind: str | None = None) -> list[tuple[str, str]]:
    """(id, label) of succeeded jobs with a checkpoint, newest first: what a fine-tune (or, kind
    pretrain, an experiment) can start from."""
    query = (
        select(Job.id, Job.kind, Job.architecture, Job.dataset, Job.strategy)
        .join(Checkpoint, Checkpoint.job_id == Job.id)
        .where(Job.status == JobStatus.succeeded, *([Job.kind == kind] if kind else []))
        .order_by(Job.created_at.desc())
        .limit(200)
    )
    return [
        (
            r.id,
            f"{r.id[:8]} {r.kind} {r.architecture} on {r.dataset}"
            + (f" ({r.strategy})" if r.strategy else ""),
        )
        for r in session.execute(query)
    ]
