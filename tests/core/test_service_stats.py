"""core/service_stats.py: the numbers /metrics serves, straight from the tables."""

from __future__ import annotations

import pytest

from core import service_stats as stats
from core.models import EpochMetric, JobStatus
from tests.rows import cost_row


def add_cost(sessions, job_id: str, seconds: float, images_per_second: float, peak: int) -> None:
    with sessions() as session:
        session.add(cost_row(job_id, train_seconds=seconds, eval_seconds=0.0, peak_memory_bytes=peak))
        for epoch in (1, 2):  # mean over the epochs: images_per_second
            ips = images_per_second + (10 if epoch == 1 else -10)
            session.add(EpochMetric(job_id=job_id, epoch=epoch, phase="train", loss=1.0, accuracy=0.5, lr=0.1,
                                    seconds=1.0, images_per_second=ips))  # fmt: skip
        session.commit()


def test_job_counts_name_every_status_and_kind_with_zeros(sessions, make_job):
    make_job(JobStatus.queued)
    make_job(JobStatus.queued)
    make_job(JobStatus.failed)

    counts = stats.job_counts(sessions())

    assert counts[("queued", "pretrain")] == 2 and counts[("failed", "pretrain")] == 1
    assert counts[("running", "finetune")] == 0 and len(counts) == len(JobStatus) * 2


def test_cost_distributions_count_succeeded_jobs_under_each_bound(sessions, make_job):
    fast, slow, failed = (
        make_job(JobStatus.succeeded),
        make_job(JobStatus.succeeded),
        make_job(JobStatus.failed),
    )
    add_cost(sessions, fast, 5.0, 100.0, 2**20)
    add_cost(sessions, slow, 50.0, 1000.0, 2**30)
    add_cost(sessions, failed, 1.0, 1.0, 1)  # not succeeded: not counted

    with sessions() as session:
        (seconds,) = stats.cost_distribution(session, "seconds", (10, 100))
        (throughput,) = stats.cost_distribution(session, "images_per_second", (100, 500))
        (memory,) = stats.cost_distribution(session, "peak_memory_bytes", (2**20, 2**30))

    assert (seconds.kind, seconds.count, seconds.total, seconds.under) == ("pretrain", 2, 55.0, (1, 2))
    assert throughput.total == pytest.approx(1100.0) and throughput.under == (1, 1)
    assert memory.under == (1, 2)
    with pytest.raises(ValueError, match="one of seconds"):
        stats.cost_distribution(sessions(), "joules", (1,))
