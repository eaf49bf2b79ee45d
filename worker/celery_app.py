"""The consuming Celery app: core.queue's configuration plus this package's task.

celery -A worker.celery_app worker --queues transferlab     # or: transferlab worker
"""

from __future__ import annotations

from core.queue import make_celery_app
from core.settings import get_settings

celery_app = make_celery_app(get_settings().celery_broker_url, include=("worker.tasks",))
