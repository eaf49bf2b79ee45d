"""Atomic writes are durable: the data is fsynced before the rename, the folder after it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import durable
from engine.durable import write_atomically


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync and rename, in order: ("fsync", path) and ("replace", target)."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace, real_open = os.fsync, os.replace, os.open
    opened: dict[int, str] = {}

    def tracking_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        opened[fd] = str(path)
        return fd

    def tracking_fsync(fd):
        calls.append(("fsync", opened.get(fd, "?")))
        return real_fsync(fd)

    def tracking_replace(src, dst):
        calls.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(durable.os, "open", tracking_open)
    monkeypatch.setattr(durable.os, "fsync", tracking_fsync)
    monkeypatch.setattr(durable.os, "replace", tracking_replace)
    return calls


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path: Path, synced):
    target = tmp_path / "model.json"
    write_atomically(target, lambda tmp: tmp.write_text("{}"))
    kinds = [(kind, Path(path).name if kind == "fsync" else Path(path).name) for kind, path in synced]
    replace_at = kinds.index(("replace", "model.json"))
    assert any(kind == "fsync" and name.endswith(".tmp") for kind, name in kinds[:replace_at])
    assert ("fsync", tmp_path.name) in kinds[replace_at:]
    assert target.read_text() == "{}"


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary(tmp_path: Path):
    target = tmp_path / "model.safetensors"

    def full_disk(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, full_disk)
    assert list(tmp_path.iterdir()) == []


def test_an_old_file_stays_whole_when_its_replacement_fails(tmp_path: Path):
    target = tmp_path / "model.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        write_atomically(target, lambda tmp: (tmp.write_text("ne"), (_ for _ in ()).throw(RuntimeError())))
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["model.json"]
