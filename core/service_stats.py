"""The service's numbers as the database has them now: jobs by status and kind, the queue's oldest
wait, experiments by status, workers alive through their leases, and distributions of finished jobs'
costs. service/metrics.py serves them to Prometheus; they are here because they are queries on core's
tables, and anything else (a CLI, a health page) may read them too.

    counts = job_counts(session)                                   # {(status, kind): n}, every pair
    spread = cost_distribution(session, "seconds", (10, 60, 600))  # one Distribution per job kind

Each function is one aggregate query: it costs the same with 10 jobs or 100,000.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from core.models import Cost, EpochMetric, Experiment, Job, JobStatus, utcnow

JOB_KINDS = ("pretrain", "finetune")
COST_MEASURES = ("seconds", "images_per_second", "peak_memory_bytes")


@dataclass(frozen=True)
class Distribution:
    """Succeeded jobs of one kind: how many, the sum of the measure, and how many are at or under
    each bound (cumulative, the bounds' order), as a Prometheus histogram wants them."""

    kind: str
    count: int
    total: float
    under: tuple[int, ...]


def job_counts(session: Session) -> dict[tuple[str, str], int]:
    """Jobs per (status, kind), with a 0 for every pair that has none."""
    counts = dict.fromkeys(((s.value, k) for s in JobStatus for k in JOB_KINDS), 0)
    for status, kind, n in session.execute(
        select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)
    ):
        counts[(status, kind)] = n
    return counts


def oldest_queued_seconds(session: Session) -> float:
    """How long the oldest queued job has waited (0 when none is queued)."""
    oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.queued))
    return (utcnow() - oldest).total_seconds() if oldest is not None else 0.0


def experiment_counts(session: Session) -> dict[str, int]:
    query = select(Experiment.status, func.count()).group_by(Experiment.status)
    return {status: n for status, n in session.execute(query)}


def live_workers(session: Session) -> dict[str, int]:
    """Distinct workers holding a live lease (running a job now), per device ('unknown' before a
    worker has said which)."""
    live = select(Job.device, func.count(func.distinct(Job.worker))).where(
        Job.status == JobStatus.running, Job.lease_expires_at > utcnow()
    )
    return {device or "unknown": n for device, n in session.execute(live.group_by(Job.device))}


def _measure(measure: str) -> tuple[Any, Any]:
    """(the value column, the FROM clause that joins it to its job) of one of COST_MEASURES."""
    with_job = Cost.__table__.join(Job.__table__, Cost.job_id == Job.id)
    if measure == "seconds":
        return Cost.train_seconds + Cost.eval_seconds, with_job
    if measure == "peak_memory_bytes":
        return Cost.peak_memory_bytes, with_job
    if measure != "images_per_second":
        raise ValueError(f"unknown cost measure {measure!r}; one of {', '.join(COST_MEASURES)}")
    per_job = (  # a job's mean training throughput over its epochs
        select(EpochMetric.job_id, func.avg(EpochMetric.images_per_second).label("images_per_second"))
        .where(EpochMetric.phase == "train")
        .group_by(EpochMetric.job_id)
        .subquery()
    )
    return per_job.c.images_per_second, per_job.join(Job.__table__, per_job.c.job_id == Job.id)


def cost_distribution(session: Session, measure: str, bounds: Sequence[float]) -> list[Distribution]:
    """Succeeded jobs' training plus evaluation seconds, mean training images per second, or peak
    memory, per kind, counted under each bound."""
    value, source = _measure(measure)
    columns = [Job.kind, func.count(), func.coalesce(func.sum(value), 0.0)]
    columns += [func.sum(case((value <= bound, 1), else_=0)) for bound in bounds]
    query = select(*columns).select_from(source).where(Job.status == JobStatus.succeeded).group_by(Job.kind)
    return [
        Distribution(kind, int(count), float(total), tuple(int(n or 0) for n in under))
        for kind, count, total, *under in session.execute(query).all()
    ]
