"""A full disk while writing a checkpoint or a resume state: a DiskFullError that says so and what to
do, and no half-written file a later load could pick up."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from engine import checkpoint as engine_checkpoint
from engine import resume
from engine.checkpoint import save_checkpoint
from engine.errors import DiskFullError
from engine.models import build_model

META = {"architecture": "simple_cnn", "num_classes": 10, "class_names": list("0123456789"), "input": {}}


def half_written_then_full(_tensors, filename, metadata=None):
    Path(filename).write_bytes(b"\0" * 4096)  # some bytes reached the disk, then it filled up
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


def test_a_full_disk_during_a_checkpoint_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_checkpoint, "save_file", half_written_then_full)

    with pytest.raises(DiskFullError) as caught:
        save_checkpoint(build_model("simple_cnn", 10), META, tmp_path / "ckpt")

    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).startswith("the disk is full: could not write the checkpoint (")
    assert "MiB free" in str(caught.value) and str(tmp_path) not in str(caught.value)
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_a_full_disk_during_a_resume_state_keeps_the_previous_one(tmp_path, monkeypatch):
    directory = tmp_path / "runs" / "job" / "resume"
    resume.save_state(directory, {"epoch": 1, "w": torch.ones(3)})
    monkeypatch.setattr(resume, "save_file", half_written_then_full)

    with pytest.raises(DiskFullError, match="could not write the resume state"):
        resume.save_state(directory, {"epoch": 2, "w": torch.zeros(3)})

    assert resume.load_state(directory)["epoch"] == 1
    assert sorted(p.name for p in directory.parent.iterdir()) == ["resume"]  # no .tmp-* left
