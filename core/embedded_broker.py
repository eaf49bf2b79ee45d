"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, polled every 0.1 s.

kombu's default poll of 1 s put about a second between `POST /jobs` and the worker starting the job
(measured by bench/job_overhead.py: 989 ms median, against 4 ms with Redis). Polling a SQLite file
ten times a second costs the worker next to nothing. The interval cannot go through
broker_transport_options: this transport hands those to sqlalchemy.create_engine.
"""

from __future__ import annotations

from kombu.transport import sqlalchemy

POLLING_INTERVAL_SECONDS = 0.1
PREFIX = "sqla+"


class Transport(sqlalchemy.Transport):
    polling_interval = POLLING_INTERVAL_SECONDS


def celery_broker_settings(broker_url: str) -> dict:
    """broker_url and broker_transport for Celery: the `sqla+` prefix would pick kombu's own class."""
    if not broker_url.startswith(PREFIX):
        return {"broker_url": broker_url}
    return {"broker_url": broker_url[len(PREFIX) :], "broker_transport": f"{__name__}:Transport"}
