"""The job state machine: every public transition moves a row only from the statuses TRANSITIONS
lists, to the status it names; from every other status it changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from core import jobs
from core.jobs import TRANSITIONS, Lease, Transition, TransitionRefused
from core.models import Job, JobStatus, utcnow

ALL = list(JobStatus)
W, ATTEMPT, MAX = "w:1", 1, 3


def held(job_id: str) -> Lease:
    return Lease(job_id, W, ATTEMPT)


def _fail_send(_job_id: str) -> None:
    raise ConnectionError("broker down")


def _reap(session, _job_id):
    jobs.reap_expired(session, MAX, lambda _id: None, utcnow(), jobs.Reaped([], [], []))


def _resend(session, _job_id):
    jobs.resend_stranded(session, 2, lambda _id: None, utcnow(), jobs.Reaped([], [], []))


def _claim(session, job_id):
    return jobs.claim_job(session, job_id, worker="w:2", device="cpu", lease_seconds=2, max_attempts=MAX)


# Each operation: (the transitions it may make, row overrides, what to call). The row starts with an
# expired lease held by W at attempt ATTEMPT, sent long ago; the overrides make the operation's own
# condition true, so only the status decides whether the row moves.
OPERATIONS: dict[str, tuple[set[Transition], dict, Callable]] = {
    "send failed": ({Transition.send_failed}, {}, lambda s, j: jobs.send(s, [j], _fail_send)),
    "resend": ({Transition.resend}, {}, _resend),
    "claim": ({Transition.claim, Transition.take_over}, {}, _claim),
    "renew lease": ({Transition.renew_lease}, {}, lambda s, j: jobs.renew_lease(s, held(j), lease_seconds=2)),
    "record": ({Transition.record}, {}, lambda s, j: jobs.record(s, held(j), progress=0.5)),
    "succeed": ({Transition.succeed}, {}, lambda s, j: jobs.finish(s, held(j), JobStatus.succeeded)),
    "fail": ({Transition.fail}, {}, lambda s, j: jobs.finish(s, held(j), JobStatus.failed, error="x")),
    "stop cancelled": (
        {Transition.stop_cancelled}, {"cancel_requested": True},
        lambda s, j: jobs.finish(s, held(j), JobStatus.cancelled),
    ),
    "release": ({Transition.release}, {}, lambda s, j: jobs.release(s, held(j), lambda _id: None)),
    "cancel": ({Transition.cancel_queued, Transition.request_cancel}, {}, jobs.cancel),
    "refuse cancelled": ({Transition.refuse_cancelled}, {"cancel_requested": True}, _claim),
    "refuse exhausted": ({Transition.refuse_exhausted}, {"attempts": MAX}, _claim),
    "reap requeue": ({Transition.reap_requeue}, {}, _reap),
    "reap cancelled": ({Transition.reap_cancelled}, {"cancel_requested": True}, _reap),
    "reap exhausted": ({Transition.reap_exhausted}, {"attempts": MAX}, _reap),
    "delete": ({Transition.delete}, {}, lambda s, j: jobs.delete_ended(s, [j])),
}  # fmt: skip


def _expected(transitions: set[Transition], status: JobStatus) -> JobStatus | None:
    targets = {TRANSITIONS[t].target for t in transitions if status in TRANSITIONS[t].sources}
    assert len(targets) <= 1, "an operation's transitions must not overlap on a status"
    return targets.pop() if targets else status


@pytest.mark.parametrize("status", ALL)
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_each_transition_moves_only_from_the_statuses_the_table_allows(
    settings, sessions, make_job, operation, status
):
    transitions, overrides, call = OPERATIONS[operation]
    long_ago = utcnow() - timedelta(hours=1)
    values = dict(worker=W, attempts=ATTEMPT, lease_expires_at=long_ago, sent_at=long_ago, send_count=1)
    values.update(overrides)
    job_id = make_job(status, **values)
    with sessions() as session:
        call(session, job_id)
        session.commit()
    with sessions() as session:
        row = session.get(Job, job_id)  # None: deleted
        assert (row.status if row is not None else None) == _expected(transitions, status)


def test_every_transition_in_the_table_is_made_by_some_operation():
    made = set().union(*(transitions for transitions, _, _ in OPERATIONS.values()))
    assert made | {Transition.create} == set(Transition)


def test_create_inserts_queued_rows_and_sends_them(settings, sessions):
    sent: list[str] = []
    with sessions() as session:
        job = Job(kind="pretrain", spec={}, dataset="stl10", architecture="simple_cnn")
        assert jobs.create_and_send(session, [job], sent.append) == []
        row = session.get(Job, job.id)
        assert (row.status, row.send_count, sent) == ("queued", 1, [job.id]) and row.sent_at is not None


def test_a_create_whose_send_fails_leaves_a_failed_job_naming_why(settings, sessions):
    with sessions() as session:
        job = Job(kind="pretrain", spec={}, dataset="stl10", architecture="simple_cnn")
        assert jobs.create_and_send(session, [job], _fail_send) == [job.id]
        row = session.get(Job, job.id)
        assert row.status == "failed" and "could not be queued: ConnectionError: broker down" in row.error


def test_a_success_after_an_accepted_cancel_ends_cancelled(settings, sessions, make_job, job_reader):
    job_id = make_job(
        JobStatus.running, worker=W, attempts=ATTEMPT, lease_expires_at=utcnow() + timedelta(minutes=1)
    )
    with sessions() as session:
        assert jobs.cancel(session, job_id) == jobs.CancelOutcome.requested
        assert jobs.finish(session, Lease(job_id, W, ATTEMPT), JobStatus.succeeded) == JobStatus.cancelled
        session.commit()
    assert job_reader(job_id).status == "cancelled"


def test_a_status_change_outside_the_table_is_refused(settings, sessions, make_job):
    job_id = make_job(JobStatus.succeeded)
    with sessions() as session, pytest.raises(TransitionRefused):
        jobs._apply(session, job_id, Transition.claim, from_status=[JobStatus.succeeded])
    with sessions() as session, pytest.raises(TransitionRefused):
        jobs.record(session, Lease(job_id, W, ATTEMPT), status=JobStatus.queued)


def test_docs_architecture_shows_the_table_the_code_has():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    assert jobs.transitions_markdown() in doc


def test_docs_architecture_shows_the_experiment_table_the_code_has():
    from core.experiments.orchestrate import transitions_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    assert transitions_markdown() in doc
