"""The event streams (GET /jobs/{id}/events, /experiments/{id}/events): order, resume from
Last-Event-ID, the end, keep-alives, and clients that leave, dawdle or stop reading. Driven in
process over raw ASGI (a TestClient waits for the whole body), through uvicorn for a real socket,
and a uvicorn process for the shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import update

from core.db import get_sessionmaker
from core.models import EpochMetric, Experiment, Job, JobRole, JobStatus
from service.routes import events

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "POLL_SECONDS", 0.02)


def add_epochs(
    job_id: str, *epochs: int, phases: tuple[str, ...] = ("train", "val"), **ids: int
) -> list[int]:
    """Epoch rows for `job_id`, committed one by one (as a worker does); their ids."""
    made = []
    with get_sessionmaker()() as session:
        for epoch in epochs:
            for phase in phases:
                row = EpochMetric(
                    job_id=job_id,
                    epoch=epoch,
                    phase=phase,
                    loss=1 / epoch,
                    accuracy=0.1 * epoch,
                    lr=1e-3,
                    seconds=1.0,
                    images_per_second=100.0,
                    id=ids.get(f"{phase}{epoch}"),
                )
                session.add(row)
                session.commit()
                made.append(row.id)
    return made


def set_job(job_id: str, **values: Any) -> None:
    with get_sessionmaker()() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
        session.commit()


# ---------------------------------------------------------------- an ASGI client that can leave


@dataclass
class Stream:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    closed: bool = False  # the app sent its last body message

    @property
    def events(self) -> list[dict[str, Any]]:
        parsed = []
        for block in self.body.decode().split("\n\n"):
            lines = dict(
                line.split(": ", 1) for line in block.splitlines() if ": " in line and line[0] != ":"
            )
            if "event" in lines:
                parsed.append(
                    {"event": lines["event"], "id": int(lines["id"]), "data": json.loads(lines["data"])}
                )
        return parsed

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]


def call(
    app: Any,
    path: str,
    headers: dict[str, str] | None = None,
    leave_when: Callable[[Stream], bool] = lambda s: False,
    on_chunk: Callable[[Stream], Any] | None = None,
    timeout: float = 10.0,
) -> tuple[Stream, float]:
    """GET path on the app; the client disconnects once leave_when(stream) is true. Returns the
    stream and the seconds from that disconnect to the app returning (0 if it never left)."""
    stream = Stream()
    gone = anyio.Event()
    left_at: list[float] = []
    path, _, query = path.partition("?")

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            stream.status = message["status"]
            stream.headers = {k.decode(): v.decode() for k, v in message["headers"]}
            return
        stream.body += message.get("body", b"")
        stream.closed = not message.get("more_body", False)
        if on_chunk is not None:
            await on_chunk(stream)
        if not gone.is_set() and leave_when(stream):
            left_at.append(time.monotonic())
            gone.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "client": ("test", 1),
        "server": ("test", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }

    async def main() -> None:
        with anyio.fail_after(timeout):
            await app(scope, receive, send)

    anyio.run(main)
    return stream, (time.monotonic() - left_at[0]) if left_at else 0.0


@pytest.fixture
def asgi(app):
    return app


# ---------------------------------------------------------------- order, resume, end


def test_a_finished_job_streams_its_epochs_in_row_order_then_its_status_then_ends(asgi, make_job):
    job = make_job(status=JobStatus.succeeded, progress=1.0, current_epoch=3)
    ids = add_epochs(job.id, 1, 2, 3)

    stream, _ = call(asgi, f"/jobs/{job.id}/events")

    assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in stream.headers and stream.headers["cache-control"] == "no-cache"
    assert stream.body.startswith(b"retry: 2000\n\n")
    assert stream.names() == ["epoch"] * 6 + ["status", "end"]
    assert [e["id"] for e in stream.events[:6]] == ids == sorted(ids)
    assert [(e["data"]["epoch"], e["data"]["phase"]) for e in stream.events[:2]] == [(1, "train"), (1, "val")]
    status = stream.events[6]
    assert status["data"]["status"] == "succeeded" and status["id"] == ids[-1]
    assert stream.closed


def test_events_arrive_as_the_worker_writes_them_and_the_stream_closes_after_the_last_status(asgi, make_job):
    job = make_job(status=JobStatus.running)

    def worker() -> None:
        for epoch in (1, 2, 3):
            time.sleep(0.1)
            add_epochs(job.id, epoch)
            set_job(job.id, current_epoch=epoch, progress=epoch / 3)
        set_job(job.id, status=JobStatus.succeeded)

    thread = threading.Thread(target=worker)
    thread.start()
    stream, _ = call(asgi, f"/jobs/{job.id}/events")
    thread.join()

    epochs = [(e["data"]["epoch"], e["data"]["phase"]) for e in stream.events if e["event"] == "epoch"]
    assert epochs == [(1, "train"), (1, "val"), (2, "train"), (2, "val"), (3, "train"), (3, "val")]
    statuses = [e["data"] for e in stream.events if e["event"] == "status"]
    assert statuses[0]["status"] == "running" and statuses[-1]["status"] == "succeeded"
    assert len(statuses) >= 2 and stream.names()[-2:] == ["status", "end"]
    ids = [e["id"] for e in stream.events]
    assert ids == sorted(ids)  # every event carries the last row id: resuming never replays


def test_a_reconnect_with_last_event_id_resumes_after_that_row(asgi, make_job):
    job = make_job(status=JobStatus.succeeded)
    ids = add_epochs(job.id, 1, 2, 3)

    stream, _ = call(asgi, f"/jobs/{job.id}/events", headers={"Last-Event-ID": str(ids[2])})

    assert [e["id"] for e in stream.events if e["event"] == "epoch"] == ids[3:]
    assert stream.names()[-2:] == ["status", "end"]


def test_the_after_parameter_resumes_too_and_the_header_wins(asgi, make_job):
    job = make_job(status=JobStatus.succeeded)
    ids = add_epochs(job.id, 1, 2)

    by_query, _ = call(asgi, f"/jobs/{job.id}/events?after={ids[1]}")
    both, _ = call(asgi, f"/jobs/{job.id}/events?after={ids[1]}", headers={"Last-Event-ID": str(ids[0])})

    assert [e["id"] for e in by_query.events if e["event"] == "epoch"] == ids[2:]
    assert [e["id"] for e in both.events if e["event"] == "epoch"] == ids[1:]


def test_a_row_that_commits_behind_the_cursor_is_still_sent_once(asgi, make_job):
    # PostgreSQL can commit id 11 after id 12 (two jobs' transactions): the stream looks back.
    job = make_job(status=JobStatus.running)
    add_epochs(job.id, 1, phases=("train",), train1=10)
    add_epochs(job.id, 2, phases=("train",), train2=12)

    async def late_row(stream: Stream) -> None:
        if stream.names().count("epoch") == 2 and not getattr(late_row, "done", False):
            late_row.done = True  # type: ignore[attr-defined]
            await anyio.to_thread.run_sync(lambda: add_epochs(job.id, 1, phases=("val",), val1=11))
            await anyio.to_thread.run_sync(lambda: set_job(job.id, status=JobStatus.succeeded))

    stream, _ = call(asgi, f"/jobs/{job.id}/events", on_chunk=late_row)

    rows = [e["data"]["id"] for e in stream.events if e["event"] == "epoch"]
    assert rows == [10, 12, 11]
    assert [e["id"] for e in stream.events] == sorted(e["id"] for e in stream.events)


def test_an_experiment_streams_its_jobs_and_ends_once_they_all_have_ended(asgi, make_job, session):
    experiment = Experiment(
        name="e", status="running", request={"name": "e"}, dataset="mnist", architecture="simple_cnn"
    )
    session.add(experiment)
    session.commit()
    jobs = [
        make_job(
            status=JobStatus.running, kind="finetune", experiment_id=experiment.id, role=JobRole.finetune
        )
        for _ in range(2)
    ]

    def worker() -> None:
        for job in jobs:
            time.sleep(0.1)
            add_epochs(job.id, 1)
            set_job(job.id, status=JobStatus.succeeded, progress=1.0)
        with get_sessionmaker()() as db:
            db.execute(update(Experiment).where(Experiment.id == experiment.id).values(status="succeeded"))
            db.commit()

    thread = threading.Thread(target=worker)
    thread.start()
    stream, _ = call(asgi, f"/experiments/{experiment.id}/events")
    thread.join()

    names = stream.names()
    assert names[-2:] == ["status", "end"] and stream.events[-2]["data"]["status"] == "succeeded"
    assert stream.events[-2]["data"]["job_counts"]["succeeded"] == 2
    final = {e["data"]["id"]: e["data"]["status"] for e in stream.events if e["event"] == "job"}
    assert final == {job.id: "succeeded" for job in jobs}
    assert {e["data"]["job_id"] for e in stream.events if e["event"] == "epoch"} == {j.id for j in jobs}


def test_unknown_ids_are_404_before_any_stream_starts(client):
    assert client.get("/jobs/nope/events").status_code == 404
    assert client.get("/experiments/nope/events").json()["detail"] == "experiment 'nope' not found"


def test_the_streams_are_documented_as_text_event_stream(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/jobs/{job_id}/events", "/experiments/{experiment_id}/events"):
        operation = paths[path]["get"]
        assert "text/event-stream" in operation["responses"]["200"]["content"]
        assert {p["name"] for p in operation["parameters"]} >= {"Last-Event-ID", "after"}


# ---------------------------------------------------------------- clients that leave, dawdle, stall


def test_silence_is_filled_with_keep_alive_comments(asgi, make_job, monkeypatch):
    monkeypatch.setattr(events, "KEEPALIVE_SECONDS", 0.05)
    job = make_job(status=JobStatus.running)

    stream, _ = call(
        asgi, f"/jobs/{job.id}/events", leave_when=lambda s: s.body.count(b": keep-alive\n\n") >= 2
    )

    assert stream.names() == ["status"]


def test_a_client_that_disconnects_ends_its_stream_at_once_even_while_nothing_happens(
    asgi, make_job, monkeypatch
):
    monkeypatch.setattr(events, "POLL_SECONDS", 30.0)  # it would sleep 30 s before the next write
    job = make_job(status=JobStatus.running)
    before = events.STATS.ended["disconnect"]

    stream, seconds = call(asgi, f"/jobs/{job.id}/events", leave_when=lambda s: "status" in s.names())

    assert seconds < 1.0 and not stream.closed
    assert events.STATS.ended["disconnect"] == before + 1 and events.STATS.open == 0


def test_a_slow_client_gets_every_event_later_none_lost_none_twice(asgi, make_job):
    job = make_job(status=JobStatus.running)

    def worker() -> None:
        for epoch in range(1, 11):
            add_epochs(job.id, epoch)
            time.sleep(0.01)
        set_job(job.id, status=JobStatus.succeeded)

    async def dawdle(stream: Stream) -> None:
        if len(stream.body) > 20:
            await anyio.sleep(0.3)  # a reader far slower than the writer

    thread = threading.Thread(target=worker)
    thread.start()
    stream, _ = call(asgi, f"/jobs/{job.id}/events", on_chunk=dawdle)
    thread.join()

    epochs = [(e["data"]["epoch"], e["data"]["phase"]) for e in stream.events if e["event"] == "epoch"]
    assert epochs == [(n, phase) for n in range(1, 11) for phase in ("train", "val")]
    assert stream.names()[-1] == "end"


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(asgi, make_job, monkeypatch):
    monkeypatch.setattr(events, "SEND_TIMEOUT_SECONDS", 0.2)
    job = make_job(status=JobStatus.running)
    before = events.STATS.ended["stalled"]

    async def stop_reading(stream: Stream) -> None:
        if b"event: status" in stream.body:
            await anyio.sleep_forever()

    started = time.monotonic()
    call(asgi, f"/jobs/{job.id}/events", on_chunk=stop_reading)

    assert time.monotonic() - started < 5
    assert events.STATS.ended["stalled"] == before + 1 and events.STATS.open == 0


def test_a_stream_ends_when_the_server_is_asked_to_stop(asgi, make_job):
    job = make_job(status=JobStatus.running)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # stands in for uvicorn's handler
    try:
        with events.ending_streams_on_exit_signals():
            threading.Timer(0.2, signal.raise_signal, (signal.SIGTERM,)).start()
            stream, _ = call(asgi, f"/jobs/{job.id}/events")
    finally:
        signal.signal(signal.SIGTERM, previous)
        events._stopping.clear()
    assert stream.closed and stream.names() == ["status"]


# ---------------------------------------------------------------- over real sockets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dropped_connection_ends_its_stream_on_a_real_server(app, make_job):
    import uvicorn

    job = make_job(status=JobStatus.running)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        with httpx.stream("GET", f"http://127.0.0.1:{port}/jobs/{job.id}/events", timeout=5) as response:
            assert response.status_code == 200
            # Keep the iterator: a discarded one is closed when it is collected, and closing it closes
            # the connection (the stream would end as a disconnect before the assertion, under load).
            chunks = response.iter_bytes()
            next(chunks)
            assert events.STATS.open == 1
        deadline = time.monotonic() + 2
        while events.STATS.open and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events.STATS.open == 0  # the client closed its socket: no generator left running
    finally:
        server.should_exit = True
        thread.join(5)


def test_a_server_with_open_streams_stops_within_seconds(settings, make_job):
    job = make_job(status=JobStatus.running)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port), "--log-level", "warning"],
        env=env,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        with httpx.stream("GET", f"{url}/jobs/{job.id}/events", timeout=10) as response:
            next(response.iter_bytes())
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
        assert time.monotonic() - started < 5  # uvicorn alone waits for the stream's 10 minutes
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_database_that_goes_away_ends_the_stream_cleanly(asgi, make_job, monkeypatch):
    job = make_job(status=JobStatus.running)
    before = events.STATS.ended["error"]
    calls = []

    def poll(self, session):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("database is gone")
        return original(self, session)

    original = events.JobEvents.poll
    monkeypatch.setattr(events.JobEvents, "poll", poll)
    stream, _ = call(asgi, f"/jobs/{job.id}/events")

    assert stream.closed and stream.names() == ["status"]  # the client reconnects and resumes
    assert events.STATS.ended["error"] == before + 1
