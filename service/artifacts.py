"""PNG artifacts: written under Settings.artifacts_dir, one Artifact row each, served by name.

    record_job_artifacts(job_id, result)            # the worker, with the engine's RunResult; never raises
    write_job_artifacts(session, job_id, result.evaluation, result.epochs)   # the same, your session
    write_experiment_artifacts(session, experiment)            # when an experiment ends

A job gets its confusion matrix and loss/accuracy curves (from its stored rows) and, when the
engine's Evaluation is at hand (it holds the test predictions, which are not stored), a grid of
correctly classified and one of misclassified test images. An experiment gets test accuracy against
training time and against trainable parameters, and a per-class F1 comparison. Writing again replaces
a file and its row: a retried job never leaves two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.models import Artifact, EpochMetric, Evaluation, Experiment, Job

log = logging.getLogger(__name__)

PNG = "image/png"
EXAMPLES_PER_GRID = 16

JOB_ARTIFACTS = {
    "confusion_matrix.png": "Confusion matrix on the test split",
    "correct.png": "Correctly classified test images",
    "misclassified.png": "Misclassified test images, most confident first",
    "curves.png": "Loss and accuracy per epoch",
}
EXPERIMENT_ARTIFACTS = {
    "accuracy_vs_time.png": "Test accuracy against training time",
    "accuracy_vs_parameters.png": "Test accuracy against trainable parameters",
    "per_class_f1.png": "Per-class F1 of each strategy's chosen run and its control",
}


def artifact_file(settings: Settings, artifact: Artifact) -> Path:
    """The file of a row, refusing any stored path that would leave the artifacts folder."""
    root = settings.artifacts_dir
    path = (root / artifact.path).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"artifact {artifact.id} has a path outside {root}")
    return path


def save_artifact(
    session: Session,
    settings: Settings,
    *,
    name: str,
    title: str,
    data: bytes,
    job_id: str | None = None,
    experiment_id: str | None = None,
    media_type: str = PNG,
) -> Artifact:
    """Write the file (atomically) and insert or replace its row. Flushes; the caller commits."""
    if (job_id is None) == (experiment_id is None):
        raise ValueError("an artifact belongs to exactly one job or one experiment")
    relative = Path("jobs", job_id) if job_id else Path("experiments", experiment_id)
    relative = relative / name
    path = settings.artifacts_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    owner = Artifact.job_id == job_id if job_id else Artifact.experiment_id == experiment_id
    row = session.scalar(select(Artifact).where(owner, Artifact.name == name))
    if row is None:
        row = Artifact(job_id=job_id, experiment_id=experiment_id, name=name)
        session.add(row)
    row.title = title
    row.media_type = media_type
    row.path = relative.as_posix()
    row.size_bytes = len(data)
    session.flush()
    return row


def job_label(job: Job) -> str:
    """A short name for titles: 'finetune partial-2 (control) 1a2b3c4d'."""
    from service.experiments.plan import variant_name

    if job.kind == "pretrain":
        what = f"pretrain {job.architecture} on {job.dataset}"
    else:
        what = f"{job.kind} {variant_name(job.strategy, job.spec.get('frozen_blocks'))}"
        if job.spec.get("random_init"):
            what += " (control)"
    return f"{what} {job.id[:8]}"


def _pick_correct(true: list[int], predicted: list[int], count: int) -> list[int]:
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
    session: Session, settings: Settings, job: Job, evaluation: Any, class_names: list[str]
) -> list[Artifact]:
    from engine.datasets import load_split
    from engine.plots import examples_png

    indices = evaluation.sample_indices.tolist()
    if not indices:
        return []
    true = evaluation.true_labels.tolist()
    predicted = evaluation.predicted_labels.tolist()
    probabilities = evaluation.probabilities
    confidence = [float(probabilities[k, predicted[k]]) for k in range(len(predicted))]
    split = load_split(job.dataset, "test", settings.data_root, settings.download)

    wrong = [k for k in range(len(true)) if true[k] != predicted[k]]
    wrong.sort(key=lambda k: -confidence[k])
    groups = {
        "correct.png": _pick_correct(true, predicted, EXAMPLES_PER_GRID),
        "misclassified.png": wrong[:EXAMPLES_PER_GRID],
    }
    rows = []
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
        rows.append(
            save_artifact(session, settings, name=name, title=JOB_ARTIFACTS[name], data=data, job_id=job.id)
        )
    return rows


def write_job_artifacts(
    session: Session,
    job_id: str,
    evaluation: Any | None = None,
    epochs: Sequence[Any] | None = None,
    *,
    settings: Settings | None = None,
) -> list[Artifact]:
    """The job's plots. `evaluation` is the engine's engine.results.Evaluation (RunResult.evaluation):
    with it come the example grids, and the confusion matrix needs no stored row; `epochs` are the
    engine's EpochMetrics (RunResult.epochs). What is not given is read from the job's stored rows, so
    this works before the job's results are committed and long after. Flushes; the caller commits."""
    from engine.plots import confusion_matrix_png, curves_png

    settings = settings or get_settings()
    job = session.get(Job, job_id)
    if job is None:
        return []
    rows: list[Artifact] = []
    label = job_label(job)
    if evaluation is not None:
        class_names = [c.label for c in evaluation.per_class]
        matrix = evaluation.confusion_matrix
    else:
        stored = session.get(Evaluation, job_id)
        class_names = [c["label"] for c in stored.per_class] if stored is not None else []
        matrix = stored.confusion_matrix if stored is not None else None
    if matrix is not None:
        data = confusion_matrix_png(matrix, class_names, f"Confusion matrix: {label}")
        rows.append(
            save_artifact(
                session,
                settings,
                name="confusion_matrix.png",
                title=JOB_ARTIFACTS["confusion_matrix.png"],
                data=data,
                job_id=job_id,
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
        rows.append(
            save_artifact(
                session,
                settings,
                name="curves.png",
                title=JOB_ARTIFACTS["curves.png"],
                data=curves_png(points, f"Loss and accuracy: {label}"),
                job_id=job_id,
            )
        )
    if evaluation is not None and class_names:
        rows += _example_grids(session, settings, job, evaluation, class_names)
    return rows


def record_job_artifacts(job_id: str, result: Any | None = None) -> None:
    """The worker's hook: write_job_artifacts from the engine's RunResult (its evaluation and epochs),
    in a session of its own, committed. Call it after run_job returned and before the job is marked
    succeeded, so that a finished job always has its plots. Logs and swallows any error: a plot must
    never fail a job that trained."""
    from service.db import get_sessionmaker

    try:
        with get_sessionmaker()() as session:
            if result is None:
                write_job_artifacts(session, job_id)
            else:
                write_job_artifacts(session, job_id, result.evaluation, result.epochs)
            session.commit()
    except Exception:
        log.exception("job %s: could not write its plots", job_id)


def render_experiment_plots(session: Session, experiment: Experiment) -> list[tuple[str, bytes]]:
    """(name, PNG) for accuracy against time and against trainable parameters (every succeeded run;
    controls hollow; the chosen runs named) and per-class F1 of each variant's chosen run and its
    control. Reads rows only; writes nothing."""
    from engine.plots import per_class_f1_png, scatter_png
    from service.experiments.compare import build_comparison

    comparison = build_comparison(session, experiment)
    done = [r for r in comparison.rows if r.test_accuracy is not None and r.train_seconds is not None]
    if not done:
        return []
    chosen = {r.job_id for r in comparison.rows if r.chosen}
    chosen |= {r.control_job_id for r in comparison.rows if r.chosen and r.control_job_id}

    def name(row) -> str:
        if row.job_id not in chosen:
            return ""
        return f"{row.variant} control" if row.control else row.variant

    points = [
        {
            "name": name(r),
            "accuracy": r.test_accuracy,
            "train_seconds": r.train_seconds,
            "trainable_parameters": r.trainable_parameters,
            "control": r.control,
        }
        for r in done
    ]
    title = f"{experiment.name}: fine-tuned on {experiment.dataset}"
    plots = [
        ("accuracy_vs_time.png", scatter_png(points, "train_seconds", "training time (s)", title)),
        (
            "accuracy_vs_parameters.png",
            scatter_png(points, "trainable_parameters", "trainable parameters", title, log_x=True),
        ),
    ]
    bars, class_names = [], []
    for row in comparison.rows:
        if row.job_id in chosen and row.test_accuracy is not None:
            stored = session.get(Evaluation, row.job_id)
            class_names = [c["label"] for c in stored.per_class]
            bars.append({"name": name(row), "f1": [c["f1"] for c in stored.per_class]})
    if bars:
        plots.append(("per_class_f1.png", per_class_f1_png(bars, class_names, f"Per-class F1: {title}")))
    return plots


def save_experiment_plots(
    session: Session,
    experiment_id: str,
    plots: list[tuple[str, bytes]],
    *,
    settings: Settings | None = None,
) -> list[Artifact]:
    """Store rendered plots as the experiment's artifacts. Flushes; the caller commits."""
    settings = settings or get_settings()
    return [
        save_artifact(
            session,
            settings,
            name=name,
            title=EXPERIMENT_ARTIFACTS[name],
            data=data,
            experiment_id=experiment_id,
        )
        for name, data in plots
    ]


def write_experiment_artifacts(
    session: Session, experiment: Experiment, *, settings: Settings | None = None
) -> list[Artifact]:
    """render_experiment_plots, then save_experiment_plots. Flushes; the caller commits."""
    return save_experiment_plots(
        session, experiment.id, render_experiment_plots(session, experiment), settings=settings
    )
