"""Checkpoints round-trip through safetensors + JSON and refuse tampered bytes."""

import json

import pytest
import torch

from engine.checkpoint import META_FILE, WEIGHTS_FILE, load_checkpoint, read_meta, save_checkpoint
from engine.errors import CheckpointError
from engine.models import build_model
from engine.preprocess import InputSpec

META = {
    "architecture": "simple_cnn",
    "num_classes": 10,
    "class_names": [str(i) for i in range(10)],
    "input": InputSpec(image_size=32, channels=1, mean=(0.1307,), std=(0.3081,)).to_dict(),
}


def test_round_trip_restores_identical_weights(tmp_path):
    model = build_model("simple_cnn", 10)
    info = save_checkpoint(model, META, tmp_path / "ckpt")
    state, meta = load_checkpoint(tmp_path / "ckpt", expected_sha256=info.sha256)
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)
    assert meta["sha256"] == info.sha256 and meta["architecture"] == "simple_cnn"
    assert read_meta(tmp_path / "ckpt")["input"]["channels"] == 1


def test_tampered_weights_are_refused(tmp_path):
    info = save_checkpoint(build_model("simple_cnn", 10), META, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="will not be loaded"):
        load_checkpoint(tmp_path / "ckpt", expected_sha256=info.sha256)


def test_database_sha_mismatch_is_refused_even_if_sidecar_agrees(tmp_path):
    save_checkpoint(build_model("simple_cnn", 10), META, tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="the database"):
        load_checkpoint(tmp_path / "ckpt", expected_sha256="0" * 64)


def test_pickle_files_are_never_loaded(tmp_path):
    save_checkpoint(build_model("simple_cnn", 10), META, tmp_path / "ckpt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "ckpt" / WEIGHTS_FILE)  # a pickle in disguise
    meta = json.loads((tmp_path / "ckpt" / META_FILE).read_text())
    meta.pop("sha256")
    (tmp_path / "ckpt" / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path / "ckpt")


def test_missing_meta_fields_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="class_names"):
        save_checkpoint(
            build_model("simple_cnn", 10),
            {"architecture": "simple_cnn", "num_classes": 10},
            tmp_path,
        )
