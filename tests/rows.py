"""Rows the tests insert by hand, with every required column filled: pass only what a test is about."""

from __future__ import annotations

from typing import Any

from core.models import Cost


def cost_row(job_id: str, **values: Any) -> Cost:
    """A job's Cost row: 10 s of training, 1 s of evaluation, one parameter, 1 byte, unless given."""
    defaults: dict[str, Any] = {
        "train_seconds": 10.0, "eval_seconds": 1.0, "trainable_parameters": 1, "total_parameters": 1,
        "parameter_updates": 1, "peak_memory_bytes": 1, "memory_device": "cpu",
    }  # fmt: skip
    return Cost(job_id=job_id, **{**defaults, **values})
