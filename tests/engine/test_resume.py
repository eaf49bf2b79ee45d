"""Resume states: a round trip without pickle, saves under names unique to each call, atomic swaps that
two processes cannot break, and recovery of a state set aside by a save that died mid-swap."""

import os
import threading
import time

import torch

from engine import resume
from engine.resume import LEFTOVER_SECONDS, STATE_JSON, load_state, save_state


def _state(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "weights": torch.full((64, 64), float(epoch)),
        "optimizer": {0: {"step": torch.tensor(epoch)}, "lr": (0.1, 0.01)},
    }


def _assert_whole(state: dict, epoch: int) -> None:
    assert state["epoch"] == epoch
    assert torch.equal(state["weights"], torch.full((64, 64), float(epoch)))
    assert state["optimizer"] == {0: {"step": torch.tensor(epoch)}, "lr": (0.1, 0.01)}


def _beside(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p != folder)


def test_a_saved_state_loads_back_with_integer_keys_and_tuples(tmp_path):
    save_state(tmp_path / "resume", _state(3))
    _assert_whole(load_state(tmp_path / "resume"), 3)
    assert load_state(tmp_path / "missing") is None


def test_each_save_writes_beside_under_a_name_of_its_own_with_the_pid(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        real_replace(src, dst)
        renamed.append((os.path.basename(src), os.path.basename(dst)))

    monkeypatch.setattr(resume.os, "replace", spy)
    folder = tmp_path / "resume"
    save_state(folder, _state(1))
    save_state(folder, _state(2))
    written = [src for src, dst in renamed if dst == "resume"]
    set_aside = [dst for src, dst in renamed if src == "resume"]
    assert len(written) == 2 and len(set(written)) == 2
    assert all(name.startswith(f"resume.tmp-{os.getpid()}-") for name in written)
    assert len(set_aside) == 1 and set_aside[0].startswith(f"resume.old-{os.getpid()}-")
    assert _beside(folder) == []  # nothing left beside after a finished save
    _assert_whole(load_state(folder), 2)


def test_another_processs_save_in_progress_is_left_alone(tmp_path):
    folder = tmp_path / "resume"
    theirs = tmp_path / "resume.tmp-99999-0badcafe"
    theirs.mkdir()
    (theirs / "state.safetensors").write_bytes(b"half written")
    save_state(folder, _state(1))
    assert (theirs / "state.safetensors").read_bytes() == b"half written"
    _assert_whole(load_state(folder), 1)


def test_saves_racing_into_one_folder_never_collide_and_leave_a_whole_state(tmp_path):
    folder = tmp_path / "resume"
    errors = []

    def writer(first_epoch: int) -> None:
        try:
            for epoch in range(first_epoch, first_epoch + 15):
                save_state(folder, _state(epoch))
        except Exception as e:  # reported below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(start,)) for start in (100, 200, 300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = load_state(folder)
    assert state["epoch"] in (114, 214, 314)  # the last save of whichever writer swapped in last
    _assert_whole(state, state["epoch"])
    assert _beside(folder) == []


def test_a_state_set_aside_by_a_save_that_died_between_its_renames_is_loaded(tmp_path):
    folder = tmp_path / "resume"
    save_state(folder, _state(4))
    os.replace(folder, tmp_path / "resume.old-4242-deadbeef")  # as the first of the two renames does
    _assert_whole(load_state(folder), 4)
    save_state(folder, _state(5))  # the next run carries on from there
    _assert_whole(load_state(folder), 5)


def test_of_several_states_set_aside_the_newest_is_loaded(tmp_path):
    for epoch, name in ((2, "resume.old"), (6, "resume.old-1-aaaaaaaa"), (3, "resume.old-2-bbbbbbbb")):
        save_state(tmp_path / "resume", _state(epoch))
        os.replace(tmp_path / "resume", tmp_path / name)
        written = time.time() - 100 + epoch  # state.json's mtime says which was written last
        os.utime(tmp_path / name / STATE_JSON, (written, written))
    (tmp_path / "resume.old-3-cccccccc").mkdir()  # incomplete: no state.json
    _assert_whole(load_state(tmp_path / "resume"), 6)


def test_leftovers_of_saves_that_died_long_ago_are_removed_recent_ones_kept(tmp_path):
    folder = tmp_path / "resume"
    stale_tmp, stale_old = tmp_path / "resume.tmp-7-11111111", tmp_path / "resume.old"
    recent_tmp = tmp_path / "resume.tmp-8-22222222"
    for leftover in (stale_tmp, stale_old, recent_tmp):
        leftover.mkdir()
        (leftover / "state.safetensors").write_bytes(b"x" * 100)
    long_ago = time.time() - LEFTOVER_SECONDS - 60
    for leftover in (stale_tmp, stale_old):
        os.utime(leftover, (long_ago, long_ago))
    save_state(folder, _state(1))
    assert _beside(folder) == [recent_tmp.name]
