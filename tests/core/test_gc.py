"""`transferlab gc`: the resume states of ended (or deleted) jobs and the checkpoints, plots and logs
no row points to go; what a live job uses, what rows point to and anything changed recently stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cli.main import build_parser
from core import persist
from core.deletion import collect_garbage
from core.job_logs import job_log_path
from core.models import Artifact, Checkpoint, JobStatus

HOUR = 3600.0


def make_file(path: Path, size: int = 10, age_seconds: float = 2 * HOUR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - age_seconds
    for each in (path, *path.parents):  # the file and the folders it made, as if written back then
        if each.name in ("runs", "checkpoints", "jobs", "experiments", "logs", "artifacts", "home"):
            break
        os.utime(each, (then, then))
    return path


def test_gc_removes_what_no_live_row_needs_and_keeps_the_rest(settings, sessions, make_job):
    ended, running, kept = (
        make_job(JobStatus.failed),
        make_job(JobStatus.running),
        make_job(JobStatus.succeeded),
    )
    gone_job = "f" * 32  # a job whose row was deleted
    runs, checkpoints, artifacts = settings.runs_dir, settings.checkpoints_dir, settings.artifacts_dir
    with sessions() as session:
        session.add(
            Checkpoint(
                job_id=kept,
                architecture="simple_cnn",
                dataset="stl10",
                class_names=["a"],
                input_spec={},
                path="kept-checkpoint",
                sha256="0" * 64,
                size_bytes=10,
            )
        )
        session.add(
            Artifact(
                job_id=kept,
                name="curves.png",
                title="c",
                media_type="image/png",
                path=f"jobs/{kept}/curves.png",
                size_bytes=10,
            )
        )
        session.commit()
    garbage = [
        make_file(runs / ended / "resume" / "state.json"),
        make_file(runs / gone_job / "resume" / "state.json"),
        make_file(checkpoints / "orphan-checkpoint" / "model.safetensors", size=1000),
        make_file(checkpoints / f".{persist.checkpoint_id_for(ended)}.attempt-1.7.tmp" / "model.safetensors"),
        make_file(artifacts / "jobs" / gone_job / "curves.png"),
        make_file(artifacts / "jobs" / kept / "old-leftover.png"),
        make_file(artifacts / "experiments" / ("e" * 32) / "per_class_f1.png"),
        make_file(job_log_path(settings, gone_job)),
    ]
    keep = [
        make_file(runs / running / "resume" / "state.json"),
        make_file(
            checkpoints / f".{persist.checkpoint_id_for(running)}.attempt-1.7.tmp" / "model.safetensors"
        ),
        make_file(checkpoints / "kept-checkpoint" / "model.safetensors"),
        make_file(artifacts / "jobs" / kept / "curves.png"),
        make_file(artifacts / "jobs" / kept / "cost.json"),  # its phase split: no Artifact row names it
        make_file(artifacts / "jobs" / kept / "examples.safetensors"),  # what its grids will show
        make_file(job_log_path(settings, ended)),
        make_file(checkpoints / "just-renamed-into-place" / "model.safetensors", age_seconds=0),
    ]

    with sessions() as session:
        report = collect_garbage(session, settings, min_age_seconds=HOUR)

    assert report.bytes_freed == 10 * 7 + 1000
    assert not any(path.exists() for path in garbage)
    assert all(path.exists() for path in keep)
    assert "checkpoints/orphan-checkpoint" in report.removed


def test_a_dry_run_lists_and_removes_nothing(settings, sessions, make_job):
    orphan = make_file(settings.checkpoints_dir / "orphan" / "model.safetensors")

    with sessions() as session:
        report = collect_garbage(session, settings, dry_run=True)

    assert report.removed == ["checkpoints/orphan"] and orphan.exists()


def test_the_gc_command_says_what_it_removed(settings, capsys: pytest.CaptureFixture[str]):
    make_file(settings.checkpoints_dir / "orphan" / "model.safetensors", size=123)

    args = build_parser().parse_args(["gc"])  # main() would also set up the process's logging
    assert args.func(args) == 0

    out = capsys.readouterr().out
    assert "removed checkpoints/orphan" in out and "removed 1 item(s), 123 bytes" in out
    assert not (settings.checkpoints_dir / "orphan").exists()
