"""Deleting what is no longer wanted, and the disk each job holds.

    delete_job(session, settings, job_id, force=False)              # DELETE /jobs/{id}
    delete_experiment(session, settings, experiment_id, force=False) # DELETE /experiments/{id}
    collect_garbage(session, settings, min_age_seconds=3600)        # transferlab gc
    job_disk_bytes(settings, job)                                   # GET /jobs/{id}: disk_bytes

A job's files, all under TRANSFERLAB_HOME:
    checkpoints/<checkpoint path>            its checkpoint (and .<id>.attempt-*.tmp of a dead attempt)
    runs/<job_id>[.tmp-*|.old-*]             its resume state, while it runs
    artifacts/jobs/<job_id>/                 its plots
    logs/jobs/<job_id>.log                   its own log lines (core/job_logs.py)
and an experiment's plots in artifacts/experiments/<id>/.

Only an ended job is deleted (409 otherwise: cancel it first), and not while another job was
fine-tuned from it or an experiment names it as its pre-train, unless forced: those then keep their
rows and results and lose the link (their `source` / `pretrain_job` becomes null). A dependent that
is still queued or running refuses even a forced delete. The rows go first, in one transaction
(core.jobs.delete_ended), the files after the commit: a crash between leaves files no row points to,
which `transferlab gc` removes, never a row pointing at missing files.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core import persist
from core.cost_record import FILE_NAME as COST_FILE
from core.job_logs import LOG_SUFFIX, job_log_path, job_logs_dir
from core.job_plots import EXAMPLES_FILE
from core.jobs import delete_ended, detach_dependents
from core.models import (
    EXPERIMENT_TERMINAL,
    TERMINAL_STATUSES,
    Artifact,
    Checkpoint,
    Experiment,
    Job,
    JobStatus,
)
from core.settings import Settings

log = logging.getLogger(__name__)

ACTIVE_EXPERIMENT = "pretraining", "running"
JOB_DATA_FILES = (COST_FILE, EXAMPLES_FILE)  # files in a job's artifact folder that no Artifact row names


class DeletionRefused(Exception):
    """Nothing was deleted: what stands in the way (a 409), and what to do."""


@dataclass
class Deleted:
    """What a deletion removed."""

    job_ids: list[str] = field(default_factory=list)
    experiment_ids: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    checkpoints: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint, job): the API's caches


# ---------------------------------------------------------------- what a job holds


def _inside(root: Path, relative: str) -> Path | None:
    """root / relative, or None when a stored path would leave root."""
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path != root else None


def job_paths(settings: Settings, job_id: str, checkpoint_path: str | None) -> list[Path]:
    """Every file or folder of the job that exists now."""
    checkpoints, runs = settings.checkpoints_dir, settings.runs_dir
    checkpoint_id = persist.checkpoint_id_for(job_id)
    candidates: list[Path] = [
        checkpoints / checkpoint_id,
        runs / job_id,
        settings.artifacts_dir / "jobs" / job_id,
        job_log_path(settings, job_id),
    ]
    if checkpoint_path and (recorded := _inside(checkpoints, checkpoint_path)) is not None:
        candidates.append(recorded)
    candidates += checkpoints.glob(f".{checkpoint_id}.attempt-*.tmp")
    candidates += runs.glob(f"{job_id}.tmp-*")
    candidates += runs.glob(f"{job_id}.old-*")
    unique = dict.fromkeys(path for path in candidates if path.exists() or path.is_symlink())
    return list(unique)


def disk_bytes(paths: Iterable[Path]) -> int:
    """Bytes the files at and below these paths take (their sizes; links are not followed)."""
    total = 0
    for path in paths:
        if path.is_file() or path.is_symlink():
            total += path.lstat().st_size
            continue
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += (Path(root) / name).lstat().st_size
                except FileNotFoundError:  # removed meanwhile
                    pass
    return total


def job_disk_bytes(settings: Settings, job: Job) -> int:
    """Bytes the job's checkpoint, resume state, plots and log take on disk now."""
    checkpoint_path = job.checkpoint.path if job.checkpoint is not None else None
    return disk_bytes(job_paths(settings, job.id, checkpoint_path))


def checkpoint_disk_bytes(settings: Settings, checkpoint: Checkpoint) -> int:
    """Bytes of the checkpoint's folder (weights and metadata); 0 when it is gone."""
    folder = _inside(settings.checkpoints_dir, checkpoint.path)
    return disk_bytes([folder]) if folder is not None and folder.exists() else 0


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- deleting


def delete_job(session: Session, settings: Settings, job_id: str, *, force: bool = False) -> Deleted | None:
    """Delete an ended job's rows and files. None when there is no such job; DeletionRefused (nothing
    changed) while it is queued or running, or while others depend on its checkpoint and not force.
    Commits."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    _refuse_active([job])
    return _delete(session, settings, [job], [], force=force)


def delete_experiment(
    session: Session, settings: Settings, experiment_id: str, *, force: bool = False
) -> Deleted | None:
    """Delete an ended experiment with its jobs (not a reused pre-train: that is another's job), its
    plots and their files. None when there is no such experiment. Commits."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is None:
        return None
    if experiment.status not in EXPERIMENT_TERMINAL:
        raise DeletionRefused(
            f"experiment {experiment_id!r} is {experiment.status}; cancel it first "
            f"(POST /experiments/{experiment_id}/cancel), then delete it once its jobs have ended"
        )
    jobs = list(session.scalars(select(Job).where(Job.experiment_id == experiment_id)))
    _refuse_active(jobs)
    return _delete(session, settings, jobs, [experiment], force=force)


def _refuse_active(jobs: Iterable[Job]) -> None:
    for job in jobs:
        if job.status not in TERMINAL_STATUSES:
            raise DeletionRefused(
                f"job {job.id!r} is {job.status}; cancel it first (POST /jobs/{job.id}/cancel) and delete "
                "it once it has ended"
            )


def _dependents(session: Session, job_ids: Collection[str], experiment_ids: Collection[str]) -> list[str]:
    """Who depends on these jobs' checkpoints from outside the deletion, as phrases; raises
    DeletionRefused for one that is still queued or running (forcing cannot help it)."""
    found: list[str] = []
    for other in session.scalars(select(Job).where(Job.source_job_id.in_(job_ids), Job.id.not_in(job_ids))):
        if other.status in (JobStatus.queued, JobStatus.running):
            raise DeletionRefused(
                f"job {other.id!r} ({other.status}) fine-tunes the checkpoint of job "
                f"{other.source_job_id!r}; cancel it first (POST /jobs/{other.id}/cancel)"
            )
        found.append(f"job {other.id} fine-tuned from {other.source_job_id}")
    for experiment in session.scalars(
        select(Experiment).where(
            Experiment.pretrain_job_id.in_(job_ids), Experiment.id.not_in(experiment_ids)
        )
    ):
        if experiment.status in ACTIVE_EXPERIMENT:
            raise DeletionRefused(
                f"experiment {experiment.id!r} ({experiment.status}) fine-tunes the checkpoint of job "
                f"{experiment.pretrain_job_id!r}; cancel it first (POST /experiments/{experiment.id}/cancel)"
            )
        found.append(f"experiment {experiment.id} uses {experiment.pretrain_job_id} as its pre-train")
    return found


def _delete(
    session: Session, settings: Settings, jobs: list[Job], experiments: list[Experiment], *, force: bool
) -> Deleted:
    job_ids = [job.id for job in jobs]
    experiment_ids = [experiment.id for experiment in experiments]
    dependents = _dependents(session, job_ids, experiment_ids)
    if dependents and not force:
        shown = "; ".join(dependents[:5]) + (
            f"; and {len(dependents) - 5} more" if len(dependents) > 5 else ""
        )
        raise DeletionRefused(
            f"others depend on its checkpoint: {shown}. Delete those first, or add ?force=true to delete "
            "anyway (they keep their results and lose the link)"
        )
    paths: list[Path] = []
    checkpoints = []
    for job in jobs:
        checkpoint = job.checkpoint
        checkpoints += [(checkpoint.id, job.id)] if checkpoint is not None else []
        paths += job_paths(settings, job.id, checkpoint.path if checkpoint is not None else None)
    paths += [p for e in experiment_ids if (p := settings.artifacts_dir / "experiments" / e).exists()]
    freed = disk_bytes(paths)
    try:
        if force:
            detach_dependents(session, job_ids)
        # experiments.pretrain_job_id points at jobs (their own pre-train, or a forced one's): unset it
        # before the jobs go, and the experiments after them (jobs.experiment_id points back).
        session.execute(
            update(Experiment)
            .where(Experiment.pretrain_job_id.in_(job_ids) | Experiment.id.in_(experiment_ids))
            .values(pretrain_job_id=None)
            .execution_options(synchronize_session=False)
        )
        deleted = delete_ended(session, job_ids)
        if len(deleted) != len(job_ids):  # one started or was deleted meanwhile
            raise DeletionRefused("a job changed while it was being deleted; nothing was deleted, try again")
        if experiment_ids:
            session.execute(delete(Artifact).where(Artifact.experiment_id.in_(experiment_ids)))
            session.execute(
                delete(Experiment).where(
                    Experiment.id.in_(experiment_ids), Experiment.status.in_(list(EXPERIMENT_TERMINAL))
                )
            )
        session.commit()
    except Exception:
        session.rollback()
        raise
    _remove(paths)
    log.info("deleted jobs %s, experiments %s: %d bytes", job_ids, experiment_ids, freed)
    return Deleted(job_ids, experiment_ids, freed, checkpoints)


# ---------------------------------------------------------------- transferlab gc


@dataclass
class GarbageReport:
    removed: list[str] = field(default_factory=list)  # paths relative to TRANSFERLAB_HOME
    bytes_freed: int = 0


def _age_seconds(path: Path, now: float) -> float:
    """Since the path last changed. A checkpoint folder renamed into place was written seconds
    before, so its modification time is recent too."""
    try:
        return now - path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def collect_garbage(
    session: Session, settings: Settings, *, min_age_seconds: float = 3600.0, dry_run: bool = False
) -> GarbageReport:
    """Remove the resume states of jobs that ended (or are gone), and the checkpoints, plots and logs
    no row points to. Anything changed within `min_age_seconds` is left alone: a checkpoint folder
    is renamed into place just before its row is committed, and a resume state saved while it runs."""
    now = time.time()
    statuses: dict[str, str] = {row.id: row.status for row in session.execute(select(Job.id, Job.status))}
    running_checkpoints = {
        persist.checkpoint_id_for(job_id)
        for job_id, status in statuses.items()
        if status == JobStatus.running
    }
    referenced_checkpoints = {Path(path).parts[0] for path in session.scalars(select(Checkpoint.path))}
    artifact_paths = set(session.scalars(select(Artifact.path)))
    experiment_ids = set(session.scalars(select(Experiment.id)))
    session.rollback()  # end the read; what follows touches files only
    old = lambda path: _age_seconds(path, now) >= min_age_seconds  # noqa: E731

    garbage: list[Path] = []
    for path in _children(settings.runs_dir):  # <job_id>, <job_id>.tmp-..., <job_id>.old-...
        status = statuses.get(path.name.split(".")[0])
        if (status in TERMINAL_STATUSES) or (status is None and old(path)):
            garbage.append(path)
    for path in _children(settings.checkpoints_dir):
        if path.name.startswith("."):  # .<checkpoint id>.attempt-N.<pid>.tmp: an attempt's own folder
            if path.name.split(".")[1] not in running_checkpoints and old(path):
                garbage.append(path)
        elif path.name not in referenced_checkpoints and old(path):
            garbage.append(path)
    for owner_kind, alive in (("jobs", statuses.keys()), ("experiments", experiment_ids)):
        for folder in _children(settings.artifacts_dir / owner_kind):
            if folder.name not in alive:
                garbage += [folder] if old(folder) else []
                continue
            for path in _children(folder):
                if owner_kind == "jobs" and path.name in JOB_DATA_FILES:
                    continue  # a live job's data with no Artifact row: its phase split, its example images
                if f"{owner_kind}/{folder.name}/{path.name}" not in artifact_paths and old(path):
                    garbage.append(path)  # a plot replaced or left by a failed write
    for path in _children(job_logs_dir(settings)):
        job_id = path.name.removesuffix(LOG_SUFFIX)
        if job_id not in statuses and old(path):
            garbage.append(path)

    report = GarbageReport(
        removed=[path.relative_to(settings.home.resolve()).as_posix() for path in garbage],
        bytes_freed=disk_bytes(garbage),
    )
    if not dry_run:
        _remove(garbage)
    return report
