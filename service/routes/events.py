"""Live progress as Server-Sent Events, read by polling the database (no broker, no pub/sub).

    curl -N -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/jobs/<id>/events
    curl -N -H "Last-Event-ID: 42" http://127.0.0.1:8000/experiments/<id>/events   # resume after row 42

Events, in the order they happen (per poll: new epoch rows by id, then what changed):
- `epoch`: one per new epoch row; `id:` is the row's id, so a reconnect resumes after the last one seen.
- `status`: the job (or experiment) when its status, progress, epoch or error changed; sent once on
  connect too. Its `id:` repeats the last row id sent, so resuming never replays rows.
- `job` (experiment streams only): one of its jobs changed status or progress.
- `end`: the last event, after the terminal status (an experiment's: once all of its jobs ended too);
  the server then closes the stream. A client closes its EventSource on it, or it would reconnect.
A `: keep-alive` comment goes out every KEEPALIVE_SECONDS of silence, so proxies and browsers keep
the connection.

Disconnects: the response listens on `receive()` for `http.disconnect` the whole time, also while it
sleeps between polls, and ends its polling loop at once. A slow client is not a gone one: nothing is
queued for it, each poll reads the database from its cursor, so a reader that falls behind gets the
same events later in bigger writes. Only a send blocked for SEND_TIMEOUT_SECONDS (the client stopped
reading) ends its stream; it can resume with Last-Event-ID. A stream also ends after
MAX_STREAM_SECONDS (EventSource reconnects on its own) and when the server is asked to stop.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Protocol

import anyio
from fastapi import APIRouter, Header, Query
from sqlalchemy import select
from sqlalchemy.orm import Session, load_only
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from core.db import get_sessionmaker
from core.models import EXPERIMENT_TERMINAL, TERMINAL_STATUSES, EpochMetric, Experiment, Job
from service.errors import Responses, not_found
from service.redact import redact_optional

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # a new epoch row shows up within this (plus the client's own latency)
KEEPALIVE_SECONDS = 15.0
SEND_TIMEOUT_SECONDS = 30.0
MAX_STREAM_SECONDS = 600.0
RETRY_MILLISECONDS = 2000  # EventSource's wait before a reconnect
# Rows are read from the cursor minus this many ids, skipping those already sent: on PostgreSQL two
# jobs' transactions may commit out of id order, and a row that lands behind the cursor is still sent.
LOOKBACK_IDS = 256
MAX_ROW_ID = 2**31 - 1  # epoch_metrics.id is a 32-bit integer

router = APIRouter()

STREAM_DESCRIPTION = (
    "A text/event-stream: `epoch` events (one per new epoch row, `id:` the row id), `status` events "
    "(on connect and on every change), for experiments `job` events; it ends after the terminal status. "
    "Send `Last-Event-ID` (browsers do on reconnect) or `?after=` to resume after a row."
)
EXAMPLE = (
    "retry: 2000\n\n"
    'id: 17\nevent: epoch\ndata: {"id": 17, "job_id": "3f2b...", "epoch": 3, "phase": "val", '
    '"loss": 0.21, "accuracy": 0.94, "lr": 0.0005, "seconds": 0.4, "images_per_second": 2500.0}\n\n'
    'id: 17\nevent: status\ndata: {"id": "3f2b...", "status": "running", "progress": 0.6, ...}\n\n'
    ": keep-alive\n\n"
)


# Errors come before the stream starts, as JSON; `model=` would document them as text/event-stream.
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}


def _stream_responses(what: str) -> Responses:
    return {
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": EXAMPLE}},
            "description": STREAM_DESCRIPTION,
        },
        404: {"description": f"No {what} with that id.", "content": _JSON_ERROR},
        503: {"description": "The database is unavailable; retry later.", "content": _JSON_ERROR},
    }


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    name: str
    id: int
    data: dict[str, Any]

    def encode(self) -> bytes:
        return f"id: {self.id}\nevent: {self.name}\ndata: {json.dumps(self.data)}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def epoch_data(row: EpochMetric) -> dict[str, Any]:
    return {
        "id": row.id,
        "job_id": row.job_id,
        "epoch": row.epoch,
        "phase": row.phase,
        "loss": row.loss,
        "accuracy": row.accuracy,
        "lr": row.lr,
        "seconds": row.seconds,
        "images_per_second": row.images_per_second,
    }


def job_data(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "current_epoch": job.current_epoch,
        "cancel_requested": job.cancel_requested,
        "error": redact_optional(job.error),
        "started_at": _time(job.started_at),
        "finished_at": _time(job.finished_at),
    }


@dataclass
class EpochCursor:
    """Which epoch rows a stream has sent: all up to `last_id`, and (see LOOKBACK_IDS) which of the
    ids just below it, so that a row committed late is sent once."""

    last_id: int
    floor: int  # the resume point: rows at or below it were seen by an earlier connection
    sent: set[int] = field(default_factory=set)

    def new_rows(self, session: Session, *where: Any) -> list[EpochMetric]:
        low = max(self.floor, self.last_id - LOOKBACK_IDS)
        rows = session.scalars(
            select(EpochMetric).where(*where, EpochMetric.id > low).order_by(EpochMetric.id)
        ).all()
        fresh = [row for row in rows if row.id not in self.sent]
        self.sent = {i for i in self.sent if i > low} | {row.id for row in fresh}
        return fresh

    def events(self, rows: list[EpochMetric]) -> list[Event]:
        events = []
        for row in rows:
            self.last_id = max(self.last_id, row.id)  # a late row keeps the ids non-decreasing
            events.append(Event("epoch", self.last_id, epoch_data(row)))
        return events


class Source(Protocol):
    def poll(self, session: Session) -> tuple[list[Event], bool]:
        """The events since the last poll, and whether the stream is done."""


class JobEvents:
    def __init__(self, job_id: str, after: int):
        self.job_id = job_id
        self.cursor = EpochCursor(last_id=after, floor=after)
        self.last: dict[str, Any] | None = None

    def poll(self, session: Session) -> tuple[list[Event], bool]:
        # The status first, then the rows: a job seen terminal has committed all of its epochs.
        job = session.get(Job, self.job_id)
        if job is None:  # deleted while streaming
            return [], True
        snapshot = job_data(job)
        events = self.cursor.events(self.cursor.new_rows(session, EpochMetric.job_id == self.job_id))
        if snapshot != self.last:
            events.append(Event("status", self.cursor.last_id, snapshot))
            self.last = snapshot
        return events, job.status in TERMINAL_STATUSES


class ExperimentEvents:
    def __init__(self, experiment_id: str, after: int):
        self.experiment_id = experiment_id
        self.cursor = EpochCursor(last_id=after, floor=after)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.last: dict[str, Any] | None = None

    def poll(self, session: Session) -> tuple[list[Event], bool]:
        from service.routes.experiments import _summary_fields  # the API's progress and counts

        experiment = session.get(Experiment, self.experiment_id)
        if experiment is None:
            return [], True
        jobs = session.scalars(
            select(Job)
            .where(Job.experiment_id == self.experiment_id)
            .options(
                load_only(
                    Job.id,
                    Job.status,
                    Job.progress,
                    Job.current_epoch,
                    Job.cancel_requested,
                    Job.error,
                    Job.started_at,
                    Job.finished_at,
                    Job.role,
                    Job.created_at,
                )
            )
            .order_by(Job.created_at, Job.id)
        ).all()
        in_experiment = select(Job.id).where(Job.experiment_id == self.experiment_id)
        events = self.cursor.events(self.cursor.new_rows(session, EpochMetric.job_id.in_(in_experiment)))
        for job in jobs:
            snapshot = {**job_data(job), "role": job.role}
            if self.jobs.get(job.id) != snapshot:
                events.append(Event("job", self.cursor.last_id, snapshot))
                self.jobs[job.id] = snapshot
        fields = _summary_fields(experiment, list(jobs))
        summary = {
            key: fields[key] for key in ("id", "status", "error", "job_counts", "progress", "pretrain_job")
        }
        summary["finished_at"] = _time(experiment.finished_at)
        if summary != self.last:
            events.append(Event("status", self.cursor.last_id, summary))
            self.last = summary
        done = experiment.status in EXPERIMENT_TERMINAL and all(j.status in TERMINAL_STATUSES for j in jobs)
        return events, done


# ---------------------------------------------------------------- the response


class StreamStats:
    """How streams ended, for tests and the log: end, disconnect, stalled, lifetime, shutdown, error."""

    def __init__(self) -> None:
        self.open = 0
        self.ended: Counter[str] = Counter()
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.open += 1

    def finished(self, how: str) -> None:
        with self._lock:
            self.open -= 1
            self.ended[how] += 1


STATS = StreamStats()
_stopping = threading.Event()  # set when the server is asked to exit: streams end at their next poll


class EventStreamResponse(Response):
    """An SSE response that polls `source` until it is done, the client leaves or stops reading."""

    media_type = "text/event-stream"

    def __init__(self, source: Source):
        self.status_code = 200
        self.background = None
        self.source = source
        # No content-length: init_headers adds one only when there is a body attribute.
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = "disconnect"
        STATS.started()
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    group.cancel_scope.cancel()  # stops the polling loop wherever it waits

                group.start_soon(watch_disconnect)
                outcome = await self._stream(send)
                group.cancel_scope.cancel()
        finally:
            STATS.finished(outcome)
            log.debug("event stream ended: %s", outcome)

    async def _stream(self, send: Send) -> str:
        try:
            return await self._events(send)
        except OSError:  # servers of ASGI spec 2.4 raise on a send to a closed connection
            return "disconnect"

    async def _events(self, send: Send) -> str:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if not await self._send(send, f"retry: {RETRY_MILLISECONDS}\n\n".encode()):
            return "stalled"
        started = last_write = time.monotonic()
        while True:
            try:
                events, done = await anyio.to_thread.run_sync(self._poll)
            except Exception:  # the database went away: end it; the client reconnects and resumes
                log.exception("event stream: polling failed")
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return "error"
            if done:
                events.append(Event("end", events[-1].id if events else 0, {}))
            now = time.monotonic()
            chunk = b"".join(event.encode() for event in events)
            if not chunk and now - last_write >= KEEPALIVE_SECONDS:
                chunk = KEEPALIVE
            if chunk:
                if not await self._send(send, chunk):
                    return "stalled"
                last_write = now
            outcome = "end" if done else "shutdown" if _stopping.is_set() else None
            if outcome is None and now - started >= MAX_STREAM_SECONDS:
                outcome = "lifetime"
            if outcome is not None:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return outcome
            await anyio.sleep(POLL_SECONDS)

    def _poll(self) -> tuple[list[Event], bool]:
        with get_sessionmaker()() as session:
            return self.source.poll(session)

    @staticmethod
    async def _send(send: Send, chunk: bytes) -> bool:
        """False when the client did not take the chunk within SEND_TIMEOUT_SECONDS."""
        with anyio.move_on_after(SEND_TIMEOUT_SECONDS):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            return True
        return False


@contextmanager
def ending_streams_on_exit_signals() -> Iterator[None]:
    """While the app runs: on SIGINT or SIGTERM, end every event stream at its next poll, then call the
    handler that was there (uvicorn's, which waits for open connections before it shuts down)."""
    _stopping.clear()
    if threading.current_thread() is not threading.main_thread():  # e.g. TestClient: no signals
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handle(sig: int, frame: Any) -> None:
        _stopping.set()
        handler = previous[signal.Signals(sig)]
        if callable(handler):
            handler(sig, frame)
        elif handler != signal.SIG_IGN:  # the default action, as if we had not been here
            signal.signal(sig, handler)
            signal.raise_signal(sig)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if signal.getsignal(sig) is handle:
                signal.signal(sig, handler)


# ---------------------------------------------------------------- routes


def resume_point(last_event_id: str | None, after: int) -> int:
    """Last-Event-ID (sent by a reconnecting browser) wins over ?after=; anything but digits is 0."""
    if last_event_id is not None and last_event_id.strip().isdigit():
        return min(int(last_event_id.strip()), MAX_ROW_ID)
    return after


def _exists(model: type, identifier: str) -> bool:
    with get_sessionmaker()() as session:
        return session.get(model, identifier) is not None


LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", description="Resume after this epoch row id (browsers send it)."),
]
After = Annotated[
    int, Query(ge=0, le=MAX_ROW_ID, description="Resume after this epoch row id (as Last-Event-ID).")
]


async def job_stream(job_id: str, last_event_id: str | None, after: int) -> EventStreamResponse:
    if not await anyio.to_thread.run_sync(_exists, Job, job_id):
        raise not_found("job", job_id)
    return EventStreamResponse(JobEvents(job_id, resume_point(last_event_id, after)))


async def experiment_stream(experiment_id: str, last_event_id: str | None, after: int) -> EventStreamResponse:
    if not await anyio.to_thread.run_sync(_exists, Experiment, experiment_id):
        raise not_found("experiment", experiment_id)
    return EventStreamResponse(ExperimentEvents(experiment_id, resume_point(last_event_id, after)))


@router.get(
    "/jobs/{job_id}/events",
    tags=["jobs"],
    response_class=EventStreamResponse,
    status_code=200,  # FastAPI reads it from the class's __init__ otherwise
    responses=_stream_responses("job"),
)
async def job_events(job_id: str, last_event_id: LastEventId = None, after: After = 0) -> Response:
    """A job's epochs and status changes as they happen (Server-Sent Events); ends when it ends.
    Polling instead: GET /jobs/{id}/metrics?since_epoch=N and GET /jobs/{id}."""
    return await job_stream(job_id, last_event_id, after)


@router.get(
    "/experiments/{experiment_id}/events",
    tags=["experiments"],
    response_class=EventStreamResponse,
    status_code=200,  # FastAPI reads it from the class's __init__ otherwise
    responses=_stream_responses("experiment"),
)
async def experiment_events(
    experiment_id: str, last_event_id: LastEventId = None, after: After = 0
) -> Response:
    """An experiment's status, its jobs' status and progress, and their epochs as they happen (SSE);
    ends when the experiment and all of its jobs have ended."""
    return await experiment_stream(experiment_id, last_event_id, after)
