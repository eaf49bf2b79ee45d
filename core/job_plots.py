"""A job's plots (confusion matrix, loss/accuracy curves, grids of correct and misclassified test
images), drawn the first time someone looks, not in the job.

    examples = pick_examples(session, settings, job_id, evaluation)   # the worker, before its final write
    save_examples(settings, job_id, examples)                          # ... and in it
    draw_missing_job_plots(session, settings, job)                     # the API, on a first look; commits

Why not in the job: drawing four PNGs with matplotlib cost 0.45-1.0 s a job, the largest part of
what a small job spends outside training (issue 15's 15% budget), and most jobs of a sweep are never
looked at. The matrix and the curves come from stored rows (Evaluation, EpochMetric). The grids need
the test predictions, which are not stored, and the test images, which the API may not have (a worker
on another machine reads the data): so the job keeps the 32 images the grids show, with their labels
and confidences, in `examples.safetensors` beside its artifacts (tens of KB; no Artifact row; safetensors
because nothing here is ever unpickled).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.artifacts import JOB_ARTIFACTS, save_artifact
from core.models import Artifact, EpochMetric, Evaluation, Job, JobStatus
from core.settings import Settings
from engine.strategies import variant_name

log = logging.getLogger(__name__)

EXAMPLES_FILE = "examples.safetensors"
EXAMPLES_PER_GRID = 16  # 16 thumbnails per grid: enough to see what a model confuses
GRIDS = {"correct.png": "correct", "misclassified.png": "misclassified"}
_FIELDS = ("images", "true", "predicted", "confidence")


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


def examples_path(settings: Settings, job_id: str) -> Path:
    path = (settings.artifacts_dir / "jobs" / job_id / EXAMPLES_FILE).resolve()
    if not path.is_relative_to(settings.artifacts_dir):  # a job id is 32 hex digits; never a way out
        raise ValueError(f"job id {job_id!r} would leave the artifacts folder")
    return path


def pick_examples(
    session: Session, settings: Settings, job_id: str, evaluation: Any
) -> dict[str, np.ndarray]:
    """The test images the two grids show (uint8 N x C x H x W) with true and predicted labels and
    the model's confidence, as flat arrays named '<grid>_<field>'. `evaluation` is the engine's
    (RunResult.evaluation: it holds the predictions). Reads the test split the job just used (this
    process has it decoded already)."""
    from core.datasets import folder_limits
    from engine.datasets import load_split

    job = session.get(Job, job_id)
    indices = evaluation.sample_indices.tolist()
    if job is None or not indices:
        return {}
    true = evaluation.true_labels.tolist()
    predicted = evaluation.predicted_labels.tolist()
    probabilities = evaluation.probabilities
    confidence = [float(probabilities[k, predicted[k]]) for k in range(len(predicted))]
    wrong = sorted((k for k in range(len(true)) if true[k] != predicted[k]), key=lambda k: -confidence[k])
    groups = {
        "correct": pick_correct(true, predicted, EXAMPLES_PER_GRID),
        "misclassified": wrong[:EXAMPLES_PER_GRID],
    }
    split = load_split(job.dataset, "test", settings.data_root, settings.download, folder_limits(settings))
    arrays: dict[str, np.ndarray] = {}
    for group, picked in groups.items():
        arrays[f"{group}_images"] = np.ascontiguousarray(split.images[[indices[k] for k in picked]].numpy())
        arrays[f"{group}_true"] = np.array([true[k] for k in picked], np.int64)
        arrays[f"{group}_predicted"] = np.array([predicted[k] for k in picked], np.int64)
        arrays[f"{group}_confidence"] = np.array([confidence[k] for k in picked], np.float32)
    return arrays


def pick_examples_safely(
    session: Session, settings: Settings, job_id: str, evaluation: Any
) -> dict[str, np.ndarray]:
    """pick_examples that logs and swallows any error: a picture must never fail a job that trained."""
    try:
        return pick_examples(session, settings, job_id, evaluation)
    except Exception:
        log.exception("job %s: could not pick its example images", job_id)
        return {}
    finally:
        session.rollback()  # end the read transaction: the final write opens its own


def save_examples(settings: Settings, job_id: str, arrays: dict[str, np.ndarray]) -> None:
    """Write (atomically) the job's example images; nothing when there are none."""
    if not arrays:
        return
    from safetensors.numpy import save

    from engine.durable import write_atomically

    path = examples_path(settings, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save(arrays)
    write_atomically(path, lambda tmp: tmp.write_bytes(data))


def load_examples(settings: Settings, job_id: str) -> dict[str, np.ndarray] | None:
    """The arrays save_examples wrote, or None (no file, or not one of ours)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        arrays = load(examples_path(settings, job_id).read_bytes())
    except (OSError, ValueError, SafetensorError):
        return None
    wanted = {f"{g}_{f}" for g in GRIDS.values() for f in _FIELDS}
    return arrays if wanted <= arrays.keys() else None


def render_job_plots(
    session: Session, settings: Settings, job: Job, names: Iterable[str] = tuple(JOB_ARTIFACTS)
) -> list[RenderedPlot]:
    """Those of `names` the job's stored results can draw, as PNG bytes; reads, writes nothing."""
    from engine.plots import confusion_matrix_png, curves_png, examples_png  # matplotlib: only when drawing

    wanted = set(names)
    label = job_label(job)
    stored = session.get(Evaluation, job.id)
    class_names = [c["label"] for c in stored.per_class] if stored is not None else []
    plots: list[RenderedPlot] = []
    if "confusion_matrix.png" in wanted and stored is not None and stored.confusion_matrix is not None:
        data = confusion_matrix_png(stored.confusion_matrix, class_names, f"Confusion matrix: {label}")
        plots.append(RenderedPlot("confusion_matrix.png", data))
    if "curves.png" in wanted:
        epochs = session.scalars(
            select(EpochMetric)
            .where(EpochMetric.job_id == job.id)
            .order_by(EpochMetric.epoch, EpochMetric.phase)
        ).all()
        if epochs:
            points = [
                {"epoch": e.epoch, "phase": e.phase, "loss": e.loss, "accuracy": e.accuracy} for e in epochs
            ]
            plots.append(RenderedPlot("curves.png", curves_png(points, f"Loss and accuracy: {label}")))
    grids = [name for name in GRIDS if name in wanted]
    examples = load_examples(settings, job.id) if grids and class_names else None
    for name in grids:
        if examples is None:
            break
        group = GRIDS[name]
        shown = len(examples[f"{group}_true"])
        title = f"{JOB_ARTIFACTS[name]}: {label} ({shown} shown)"
        data = examples_png(
            examples[f"{group}_images"],
            examples[f"{group}_true"].tolist(),
            examples[f"{group}_predicted"].tolist(),
            examples[f"{group}_confidence"].tolist(),
            class_names,
            title,
        )
        plots.append(RenderedPlot(name, data))
    return plots


def draw_missing_job_plots(session: Session, settings: Settings, job: Job) -> None:
    """Draw and store the plots a succeeded job can have and does not yet (its first look). Commits
    what it drew. Never raises for a plot: a listing answers with what there is."""
    if job.status != JobStatus.succeeded:
        return
    present = set(session.scalars(select(Artifact.name).where(Artifact.job_id == job.id)))
    missing = [name for name in JOB_ARTIFACTS if name not in present]
    if not missing:
        return
    try:
        plots = render_job_plots(session, settings, job, missing)
        for plot in plots:
            save_artifact(
                session,
                settings,
                name=plot.name,
                title=JOB_ARTIFACTS[plot.name],
                data=plot.data,
                job_id=job.id,
            )
        if plots:
            session.commit()
    except IntegrityError:  # another request drew them at the same moment: theirs are as good
        session.rollback()
    except Exception:
        session.rollback()
        log.exception("job %s: could not draw its plots", job.id)
