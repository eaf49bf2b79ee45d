"""The artifact store: PNG files under Settings.artifacts_dir, one Artifact row each, served by name.

    save_artifact(session, settings, name=..., title=..., data=png, job_id=...)   # flushes; you commit

What is drawn lives with who draws it: a job's plots in worker/plots.py (the worker renders them as it
finishes the job), an experiment's in core/experiments/plots.py. Writing again replaces a file and its
row: a retried job never leaves two.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Artifact
from core.settings import Settings
from engine.durable import write_atomically

log = logging.getLogger(__name__)

PNG = "image/png"

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
    # Only when the experiment has them: layer_probes, and partial runs at two or more depths.
    "layer_probes.png": "Linear probe test accuracy after each block, pre-trained and random init",
    "transferability.png": "Test accuracy against frozen blocks, transferred and control (Yosinski 2014)",
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
    relative = Path("jobs", job_id) if job_id else Path("experiments", str(experiment_id))
    relative = relative / name
    path = settings.artifacts_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: tmp.write_bytes(data))
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
