"""A job's plots: confusion matrix, loss/accuracy curves, and grids of correct and misclassified test
images. Rendered to bytes while the job still runs (outside any transaction), and stored by the
holder in the same transaction as its final status, so a displaced worker never writes them.

    plots = render_job_plots(session, job_id, settings, result.evaluation, result.epochs)
    save_job_plots(session, settings, job_id, plots)     # flushes; the caller commits

The grids need the engine's Evaluation (it holds the test predictions, which are not stored); the
matrix and the curves can come from stored rows, so this also works long after the job ended.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.artifacts import JOB_ARTIFACTS, save_artifact
from core.models import Artifact, EpochMetric, Evaluation, Job
from core.settings import Settings
from engine.strategies import variant_name

log = logging.getLogger(__name__)

EXAMPLES_PER_GRID = 16  # 4x4 thumbnails per grid: enough to see what a model confuses


@dataclass(frozen=True)
class RenderedPlot:
    name: str
    data: bytes


def job_label(job: Job) -> str:
    """A short name for titles: 'finetune partial-2 (control) 1a2b3c4d'."""
    if job.kind == "pretrain":
        what = f"pretrain {job.architecture} on {job.dataset}"
    else:
        variant = variant_name(job.strategy or "", job.spec.get("frozen_blocks"), job.spec.get("probe_block"))
        what = f"{job.kind} {variant}"
        if job.spec.get("random_init"):
            what += " (control)"
    return f"{what} {job.id[:8]}"


def pick_correct(true: list[int], predicted: list[int], count: int) -> list[int]:
    """Positions of correct predictions, round-robin over the classes (all digits show up)."""
    by_class: dict[int, list[int]] = {}
    for k, (t, p) in enumerate(zip(true, predicted, strict=True)):
        if t == p:
            by_class.setdefault(t, []).append(k)
    picked: list[int] = []
    queues = [by_class[c] for c in sorted(by_class)]
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


def _example_grids(
    settings: Settings, job: Job, evaluation: Any, class_names: list[str]
) -> list[RenderedPlot]:
    from core.datasets import folder_limits
    from engine.datasets import load_split
    from engine.plots import examples_png

    indices = evaluation.sample_indices.tolist()
    if not indices:
        return []
    true = evaluation.true_labels.tolist()
    predicted = evaluation.predicted_labels.tolist()
    probabilities = evaluation.probabilities
    confidence = [float(probabilities[k, predicted[k]]) for k in range(len(predicted))]
    split = load_split(job.dataset, "test", settings.data_root, settings.download, folder_limits(settings))

    wrong = [k for k in range(len(true)) if true[k] != predicted[k]]
    wrong.sort(key=lambda k: -confidence[k])
    groups = {
        "correct.png": pick_correct(true, predicted, EXAMPLES_PER_GRID),
        "misclassified.png": wrong[:EXAMPLES_PER_GRID],
    }
    plots = []
    for name, picked in groups.items():
        images = split.images[[indices[k] for k in picked]].numpy() if picked else split.images[:0].numpy()
        title = f"{JOB_ARTIFACTS[name]}: {job_label(job)} ({len(picked)} shown)"
        data = examples_png(
            images,
            [true[k] for k in picked],
            [predicted[k] for k in picked],
            [confidence[k] for k in picked],
            class_names,
            title,
        )
        plots.append(RenderedPlot(name, data))
    return plots


def render_job_plots(
    session: Session,
    job_id: str,
    settings: Settings,
    evaluation: Any | None = None,
    epochs: Sequence[Any] | None = None,
) -> list[RenderedPlot]:
    """The job's plots as PNG bytes; reads rows, writes nothing. `evaluation` and `epochs` are the
    engine's (RunResult.evaluation, RunResult.epochs); what is not given is read from stored rows."""
    from engine.plots import confusion_matrix_png, curves_png  # matplotlib: only when drawing

    job = session.get(Job, job_id)
    if job is None:
        return []
    plots: list[RenderedPlot] = []
    label = job_label(job)
    if evaluation is not None:
        class_names = [c.label for c in evaluation.per_class]
        matrix = evaluation.confusion_matrix
    else:
        stored = session.get(Evaluation, job_id)
        class_names = [c["label"] for c in stored.per_class] if stored is not None else []
        matrix = stored.confusion_matrix if stored is not None else None
    if matrix is not None:
        plots.append(
            RenderedPlot(
                "confusion_matrix.png",
                confusion_matrix_png(matrix, class_names, f"Confusion matrix: {label}"),
            )
        )
    if epochs is None:
        epochs = session.scalars(
            select(EpochMetric)
            .where(EpochMetric.job_id == job_id)
            .order_by(EpochMetric.epoch, EpochMetric.phase)
        ).all()
    if epochs:
        points = [
            {"epoch": e.epoch, "phase": e.phase, "loss": e.loss, "accuracy": e.accuracy} for e in epochs
        ]
        plots.append(RenderedPlot("curves.png", curves_png(points, f"Loss and accuracy: {label}")))
    if evaluation is not None and class_names:
        plots += _example_grids(settings, job, evaluation, class_names)
    return plots


def render_job_plots_safely(
    session: Session, job_id: str, settings: Settings, evaluation: Any, epochs: Sequence[Any]
) -> list[RenderedPlot]:
    """render_job_plots that logs and swallows any error: a plot must never fail a job that trained."""
    try:
        return render_job_plots(session, job_id, settings, evaluation, epochs)
    except Exception:
        log.exception("job %s: could not draw its plots", job_id)
        return []
    finally:
        session.rollback()  # end the read transaction: the final write opens its own


def save_job_plots(
    session: Session, settings: Settings, job_id: str, plots: Sequence[RenderedPlot]
) -> list[Artifact]:
    """Store rendered plots as the job's artifacts. Flushes; the caller commits."""
    return [
        save_artifact(session, settings, name=p.name, title=JOB_ARTIFACTS[p.name], data=p.data, job_id=job_id)
        for p in plots
    ]


def write_job_plots(
    session: Session,
    job_id: str,
    settings: Settings,
    evaluation: Any | None = None,
    epochs: Sequence[Any] | None = None,
) -> list[Artifact]:
    """render_job_plots, then save_job_plots (for an ended job, or a test). Flushes; the caller commits."""
    return save_job_plots(
        session, settings, job_id, render_job_plots(session, job_id, settings, evaluation, epochs)
    )
