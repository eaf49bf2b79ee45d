"""Checkpoints in and out: GET /checkpoints/{id}/download gives one zip (model.safetensors +
model.json); POST /checkpoints imports it on another home, where it predicts the same; a tampered
archive (bad sha256, wrong keys or shapes, a pickle inside, extra members, too large) is refused
with nothing written."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from core import migrate
from core.models import Checkpoint
from engine.checkpoint import META_FILE, WEIGHTS_FILE
from engine.models import build_model


def noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG")
    return buffer.getvalue()


IMAGES = [(f"{i}.png", noise_png(i)) for i in range(4)]


def predict(client, **form):
    files = [("files", (name, data, "image/png")) for name, data in IMAGES]
    response = client.post("/predict", files=files, data=form)
    assert response.status_code == 200, response.text
    return response.json()


def download(client, checkpoint_id: str) -> bytes:
    response = client.get(f"/checkpoints/{checkpoint_id}/download")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    return response.content


def upload(client, archive: bytes, **form):
    return client.post("/checkpoints", files={"file": ("ckpt.zip", archive, "application/zip")}, data=form)


def members(archive: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return {name: z.read(name) for name in z.namelist()}


def rezip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()


def safetensors_bytes(state: dict[str, torch.Tensor], tmp_path) -> bytes:
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    return path.read_bytes()


def with_meta(files: dict[str, bytes], **changes) -> dict[str, bytes]:
    meta = json.loads(files[META_FILE])
    meta.update(changes)
    return {**files, META_FILE: json.dumps(meta).encode()}


@pytest.fixture
def archive(client, trained_checkpoint) -> bytes:
    return download(client, trained_checkpoint.id)


def leftovers(settings) -> list[str]:
    folder = settings.checkpoints_dir
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- the round trip


def test_the_download_holds_the_weights_and_the_metadata(client, trained_checkpoint, archive):
    files = members(archive)

    assert set(files) == {WEIGHTS_FILE, META_FILE}
    meta = json.loads(files[META_FILE])
    assert meta["architecture"] == "simple_cnn" and meta["sha256"] == trained_checkpoint.sha256


def test_an_import_on_a_fresh_home_predicts_exactly_as_the_original(
    client, env, tmp_path, trained_checkpoint
):
    archive = download(client, trained_checkpoint.id)
    before = predict(client, checkpoint=trained_checkpoint.id)

    env(HOME=str(tmp_path / "elsewhere"))  # another transferlab: its own database and folders
    migrate.upgrade()
    imported = upload(client, archive, name="digits")
    assert imported.status_code == 201, imported.text
    body = imported.json()
    after = predict(client, checkpoint=body["id"])

    assert body["origin"] == "imported" and body["job"] is None and body["name"] == "digits"
    assert body["sha256"] == trained_checkpoint.sha256  # recomputed on arrival
    assert body["class_names"] == trained_checkpoint.class_names
    assert [p["top"] for p in after["predictions"]] == [p["top"] for p in before["predictions"]]


def test_an_imported_checkpoint_is_a_finetune_source(client, archive, enqueued):
    imported = upload(client, archive).json()

    response = client.post(
        "/jobs",
        json={
            "kind": "finetune",
            "source_checkpoint": imported["id"],
            "dataset": "mnist",
            "data": {"image_size": 32},
        },
    )

    assert response.status_code == 202, response.text
    job = response.json()
    assert job["architecture"] == "simple_cnn" and job["source"] is None
    assert job["source_checkpoint"] == imported["id"]
    assert job["links"]["source_checkpoint"] == f"/checkpoints/{imported['id']}"
    assert client.get(f"/jobs/{job['id']}").json()["source_checkpoint"] == imported["id"]
    assert enqueued == [job["id"]]


def test_an_unknown_source_checkpoint_is_404(client):
    response = client.post(
        "/jobs", json={"kind": "finetune", "source_checkpoint": "nope", "dataset": "mnist"}
    )

    assert response.status_code == 404 and "source_checkpoint" in response.json()["detail"]


# ---------------------------------------------------------------- tampered archives


def refused(client, settings, count_rows, archive: bytes, status: int = 422) -> str:
    before = count_rows(Checkpoint), leftovers(settings)
    response = upload(client, archive)
    assert response.status_code == status, response.text
    assert (count_rows(Checkpoint), leftovers(settings)) == before  # nothing written, nothing left
    body = response.json()["detail"]
    if status == 422:  # FastAPI's list of errors, naming the form field
        assert [e["loc"] for e in body] == [["body", "file"]]
        body = body[0]["msg"]
    assert str(settings.home) not in body  # no server path
    return body


def test_weights_that_do_not_match_their_sha256_are_refused(client, settings, count_rows, archive):
    files = members(archive)
    weights = bytearray(files[WEIGHTS_FILE])
    weights[-1] ^= 0xFF  # a changed byte in the last tensor's data

    detail = refused(client, settings, count_rows, rezip({**files, WEIGHTS_FILE: bytes(weights)}))

    assert "sha256" in detail and "not imported" in detail


def test_weights_of_another_architecture_are_refused_naming_the_keys(
    client, settings, count_rows, archive, tmp_path
):
    files = members(archive)
    state = build_model("resnet18", 10).state_dict()
    tampered = with_meta({**files, WEIGHTS_FILE: safetensors_bytes(state, tmp_path)}, sha256=None)

    detail = refused(client, settings, count_rows, rezip(tampered))

    assert "does not hold simple_cnn's state dict" in detail and "missing" in detail


def test_weights_of_the_wrong_shapes_are_refused_naming_the_tensor(
    client, settings, count_rows, archive, tmp_path
):
    files = members(archive)
    state = build_model("simple_cnn", 5).state_dict()  # a 5-class head where the metadata says 10
    tampered = with_meta({**files, WEIGHTS_FILE: safetensors_bytes(state, tmp_path)}, sha256=None)

    detail = refused(client, settings, count_rows, rezip(tampered))

    assert "head.2.weight" in detail and "[10, 128]" in detail


class _RunsCode:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_a_pickle_in_place_of_the_weights_is_refused_unread(client, settings, count_rows, archive, capsys):
    files = members(archive)
    tampered = with_meta({**files, WEIGHTS_FILE: pickle.dumps({"w": _RunsCode()})}, sha256=None)

    detail = refused(client, settings, count_rows, rezip(tampered))

    assert "not a valid safetensors file" in detail
    assert "unpickled!" not in capsys.readouterr().out


def test_a_pickle_beside_the_weights_is_refused(client, settings, count_rows, archive):
    files = members(archive)

    detail = refused(client, settings, count_rows, rezip({**files, "model.pt": pickle.dumps({"w": 1})}))

    assert "model.pt" in detail and "never a pickle" in detail


def test_metadata_that_does_not_fit_is_refused_naming_the_field(client, settings, count_rows, archive):
    files = with_meta(members(archive), class_names=["only one"])

    detail = refused(client, settings, count_rows, rezip(files))

    assert "model.json" in detail and "class_names" in detail


def test_a_file_that_is_not_a_zip_is_refused(client, settings, count_rows):
    detail = refused(client, settings, count_rows, b"not a zip at all")

    assert "not a zip archive" in detail


def test_an_archive_over_the_size_limit_is_413(client, env, settings, count_rows, archive):
    env(MAX_CHECKPOINT_IMPORT_BYTES=1024 * 1024)
    files = members(archive)
    padded = with_meta(files, padding="x" * 100)  # keep the metadata valid
    big = rezip({**padded, WEIGHTS_FILE: files[WEIGHTS_FILE] + b"\0" * (1024 * 1024)})

    response = upload(client, big)

    assert response.status_code == 413
    assert count_rows(Checkpoint) == 1


def test_a_zip_bomb_is_stopped_at_the_limit(client, env, settings, count_rows, archive):
    env(MAX_CHECKPOINT_IMPORT_BYTES=1024 * 1024)
    files = members(archive)
    buffer = io.BytesIO()  # 8 MB of zeros deflate to a few KB: the upload is small, the content is not
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(META_FILE, files[META_FILE])
        z.writestr(WEIGHTS_FILE, b"\0" * (8 * 1024 * 1024))

    detail = refused(client, settings, count_rows, buffer.getvalue(), status=413)

    assert "TRANSFERLAB_MAX_CHECKPOINT_IMPORT_BYTES" in detail
