"""The phase split and numerics choice of a job that finished before migration 0006, when they lived
in a small JSON file beside its artifacts (<artifacts>/jobs/<job_id>/cost.json) because the `costs`
table had no column for them. New jobs write `costs.details` in their final transaction; this reads
the old file for GET /jobs/{id}/metrics, and `transferlab gc` keeps it (core/deletion.py).

    read_legacy_cost_details(settings, job_id)     # {"phase_seconds": ..., "numerics": ...} or None
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.settings import Settings

FILE_NAME = "cost.json"
MAX_BYTES = 64 * 1024  # phases and a few trials are ~2 KB; a larger file is not ours and is not served


def cost_details_path(settings: Settings, job_id: str) -> Path:
    path = (settings.artifacts_dir / "jobs" / job_id / FILE_NAME).resolve()
    if not path.is_relative_to(settings.artifacts_dir):  # a job id is 32 hex digits; never a way out
        raise ValueError(f"job id {job_id!r} would leave the artifacts folder")
    return path


def read_legacy_cost_details(settings: Settings, job_id: str) -> dict[str, Any] | None:
    """The job's old file, or None when there is none or it cannot be read."""
    try:
        path = cost_details_path(settings, job_id)
        if path.stat().st_size > MAX_BYTES:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
