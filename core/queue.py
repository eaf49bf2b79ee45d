"""The queue producer: send `transferlab.run_job(job_id)` by task name, check that the broker answers.

    from core.queue import enqueue_run_job
    enqueue_run_job(job.id)        # after committing a queued job (core.jobs.create_and_send does this)

The broker comes from settings: kombu's SQLAlchemy transport on a SQLite file under TRANSFERLAB_HOME
(embedded: no server, queued messages survive a restart) or Redis (distributed). Sending by name keeps
the producer free of the worker's code and of torch: worker/celery_app.py builds the consuming app
from the same `make_celery_app`.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from core.embedded_broker import celery_broker_settings
from core.settings import get_settings

TASK_NAME = "transferlab.run_job"
QUEUE = "transferlab"
# Longer than any job: Redis hands an unacknowledged message to another worker only after this, and
# a job that outlives it would run twice. Dead workers are found sooner through their leases.
VISIBILITY_TIMEOUT_SECONDS = 7 * 24 * 3600


def transport_options(broker_url: str) -> dict:
    if broker_url.startswith(("sqla+", "sqlalchemy+")):
        # kombu passes these to sqlalchemy.create_engine (where visibility_timeout is a TypeError).
        # The SQLAlchemy transport hides a message on delivery and has no timeout to bring it back:
        # a killed worker's message is gone, and the reaper sends its job again instead.
        return {"connect_args": {"timeout": 30}}
    return {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS}


def make_celery_app(broker_url: str, include: tuple[str, ...] = ()) -> Celery:
    """The Celery app for long GPU jobs; results live in our database, not in Celery."""
    app = Celery("transferlab", include=list(include))
    app.conf.update(
        **celery_broker_settings(broker_url),
        broker_transport_options=transport_options(broker_url),
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_ignore_result=True,  # results are rows in our database
        task_acks_late=True,  # ack when the job ends, not when it starts
        task_reject_on_worker_lost=True,  # a dead pool child puts its message back
        worker_prefetch_multiplier=1,  # never hold a second job while one trains
        worker_concurrency=1,  # one process per GPU
        worker_hijack_root_logger=False,
        # Task events, so `celery -A worker.celery_app flower` (README "Operations") shows tasks and
        # workers; the events go through the broker, a few small messages per job.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
    )
    return app


@lru_cache(maxsize=4)
def producer_for(broker_url: str) -> Celery:
    """One producing app per broker URL (tests switch settings between cases)."""
    return make_celery_app(broker_url)


def current_producer() -> Celery:
    return producer_for(get_settings().celery_broker_url)


def enqueue_run_job(job_id: str) -> None:
    """Send `transferlab.run_job(job_id)` by name. Twice is harmless: the claim is atomic."""
    current_producer().send_task(TASK_NAME, args=[job_id], queue=QUEUE)


def check_broker(timeout_seconds: float = 3.0) -> None:
    """Connect and declare the queue (creating the embedded broker's tables); raises if down."""
    app = current_producer()
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=timeout_seconds)
        app.amqp.queues[QUEUE](connection.default_channel).declare()
