"""The Celery app and the producer: long-job settings, the broker from settings, and the embedded
broker's persistence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.queue import (
    QUEUE,
    TASK_NAME,
    VISIBILITY_TIMEOUT_SECONDS,
    current_producer,
    make_celery_app,
    transport_options,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_app_is_configured_for_long_gpu_jobs():
    conf = make_celery_app("redis://127.0.0.1:6379/0").conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
    assert conf.task_ignore_result and conf.broker_connection_retry_on_startup
    assert conf.broker_transport_options["visibility_timeout"] >= 24 * 3600


def test_workers_send_task_events_for_flower():
    conf = make_celery_app("redis://127.0.0.1:6379/0").conf
    assert conf.worker_send_task_events and conf.task_send_sent_event


def test_the_redis_visibility_timeout_outlasts_a_long_job():
    assert transport_options("redis://h:6379/0") == {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS}
    assert VISIBILITY_TIMEOUT_SECONDS >= 7 * 24 * 3600


def test_the_embedded_broker_gets_no_option_that_create_engine_would_refuse():
    assert "visibility_timeout" not in transport_options("sqla+sqlite:////tmp/b.sqlite")


def test_the_default_broker_is_the_embedded_sqlite_one_under_home(settings):
    conf = current_producer().conf
    assert conf.broker_url == f"sqlite:///{settings.home.resolve() / 'broker.sqlite'}"
    assert conf.broker_transport == "core.embedded_broker:Transport"


def test_the_embedded_broker_polls_ten_times_a_second(settings):
    with current_producer().connection_for_write() as connection:
        assert connection.transport.polling_interval == 0.1


def test_the_producer_and_the_worker_app_load_no_torch():
    code = "import sys, core.queue, worker.celery_app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_worker_app_consumes_the_task_the_producer_sends_by_name():
    from worker.celery_app import celery_app

    assert "worker.tasks" in celery_app.conf.include
    assert celery_app.conf.task_default_queue == QUEUE


def _python(code: str, home: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFERLAB_")}
    env["TRANSFERLAB_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_message_sent_to_the_embedded_broker_survives_the_sending_process(tmp_path):
    # One process enqueues and exits (the service stops); a later one finds the message waiting.
    _python("from core.queue import enqueue_run_job; enqueue_run_job('job-1')", tmp_path)
    out = _python(
        "from core.queue import current_producer, QUEUE\n"
        "with current_producer().connection_for_read() as c:\n"
        "    q = c.SimpleQueue(QUEUE)\n"
        "    m = q.get(timeout=10)\n"
        "    print(m.headers['task'], m.headers['argsrepr'])\n"
        "    m.ack()\n",
        tmp_path,
    )
    assert out.split() == [TASK_NAME, "['job-1']"]
    assert QUEUE == "transferlab"
