"""The part of a job's cost record the `costs` row has no column for: wall seconds per phase and how
its numerics were chosen.

    write_cost_details(settings, job_id, {"phase_seconds": {...}, "numerics": {...}})
    read_cost_details(settings, job_id)     # the same dict, or None

The costs table has no JSON column, and a new one needs a migration this feature does not own, so the
record is a small JSON file beside the job's artifacts (<artifacts>/jobs/<job_id>/cost.json; no
Artifact row: it is data for GET /jobs/{id}/metrics, not a picture). The holder writes it in the same
step as its final status, before the commit, like the plots. A migration that adds a JSON column to
`costs` can move it there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.settings import Settings
from engine.durable import write_atomically

log = logging.getLogger(__name__)

FILE_NAME = "cost.json"
MAX_BYTES = 64 * 1024  # phases and a few trials are ~2 KB; a larger file is not ours and is not served


def cost_details_path(settings: Settings, job_id: str) -> Path:
    path = (settings.artifacts_dir / "jobs" / job_id / FILE_NAME).resolve()
    if not path.is_relative_to(settings.artifacts_dir):  # a job id is 32 hex digits; never a way out
        raise ValueError(f"job id {job_id!r} would leave the artifacts folder")
    return path


def write_cost_details(settings: Settings, job_id: str, details: dict[str, Any]) -> None:
    """Write (atomically) or replace the job's details."""
    path = cost_details_path(settings, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(details, sort_keys=True)
    write_atomically(path, lambda tmp: tmp.write_text(text))


def read_cost_details(settings: Settings, job_id: str) -> dict[str, Any] | None:
    """The job's details, or None when there are none (a job that has not finished, or ran before
    this record existed) or they cannot be read."""
    try:
        path = cost_details_path(settings, job_id)
        if path.stat().st_size > MAX_BYTES:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
