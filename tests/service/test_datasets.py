"""/datasets: the list, one data set, uploads of a zip (and every refusal, leaving nothing on disk),
and the 422 at submission for a job or experiment whose data is not under the data root."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.formats import files_under, write_image_folder

CLASSES = ("cat", "dog", "owl")
PRETRAIN = {
    "kind": "pretrain",
    "model": "simple_cnn",
    "hyperparameters": {"epochs": 1},
    "data": {"image_size": 16},
}


def _zip_of(folder: Path, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def _pets_zip(tmp_path: Path, prefix: str = "pets/") -> bytes:
    return _zip_of(write_image_folder(tmp_path / "source-images", CLASSES), prefix)


def _upload(client, data: bytes, name: str = "pets"):
    return client.post(
        "/datasets", data={"name": name}, files={"file": ("pets.zip", data, "application/zip")}
    )


def test_the_list_names_every_builtin_with_whether_its_files_are_present(client, tiny_data_root):
    body = client.get("/datasets").json()
    assert body["count"] == len(body["data"]) >= 4
    mnist = next(d for d in body["data"] if d["name"] == "mnist")
    assert mnist["kind"] == "builtin" and mnist["present"] is True
    assert mnist["split_sizes"] == {"train": 100, "test": 50}
    assert mnist["classes"] == [str(d) for d in range(10)]
    assert (mnist["channels"], mnist["native_size"]) == (1, 28)


def test_an_absent_builtin_is_listed_with_the_files_it_needs(client, data_root):
    stl10 = client.get("/datasets").json()["data"][0]
    assert stl10["name"] == "stl10" and stl10["present"] is False
    assert stl10["folder"] == "stl10_binary" and "train_X.bin" in stl10["missing_files"]


def test_an_uploaded_zip_becomes_a_folder_data_set(client, data_root, tmp_path):
    response = _upload(client, _pets_zip(tmp_path))
    assert response.status_code == 201, response.text
    assert response.headers["Location"] == "/datasets/pets"
    pets = response.json()
    assert (pets["kind"], pets["classes"], pets["split_sizes"]) == (
        "folder",
        list(CLASSES),
        {"train": 36, "test": 18},
    )
    assert (pets["channels"], pets["stored_size"]) == (3, 22)
    assert (data_root / "folders/pets/train/owl").is_dir()
    assert not (data_root / "folders/.uploads").exists()
    assert "pets" in [d["name"] for d in client.get("/datasets").json()["data"]]


def test_one_data_set_has_per_class_counts_and_a_sample_grid(client, data_root, tmp_path):
    _upload(client, _pets_zip(tmp_path, prefix=""))  # a zip without a top folder reads the same
    detail = client.get("/datasets/pets").json()
    assert detail["class_counts"] == {"train": [12, 12, 12], "test": [6, 6, 6]}
    grid = client.get(detail["sample_grid"]["url"])
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert grid.content.startswith(b"\x89PNG")


def test_counts_and_the_grid_are_computed_once_per_version_of_the_files(
    client, data_root, tmp_path, monkeypatch
):
    from core import datasets

    drawn = []
    draw = datasets._draw_sample_grid
    monkeypatch.setattr(datasets, "_draw_sample_grid", lambda *a: drawn.append(a) or draw(*a))
    _upload(client, _pets_zip(tmp_path))
    first = client.get("/datasets/pets/samples.png").content
    assert client.get("/datasets/pets/samples.png").content == first and len(drawn) == 1

    extra = data_root / "folders/pets/test/cat/extra.png"
    extra.write_bytes((data_root / "folders/pets/test/dog").glob("*.png").__next__().read_bytes())

    assert client.get("/datasets/pets").json()["class_counts"]["test"] == [7, 6, 6]
    client.get("/datasets/pets/samples.png")
    assert len(drawn) == 2  # the test split changed: drawn again


def test_an_unknown_data_set_is_404(client, data_root):
    assert client.get("/datasets/birds").status_code == 404
    assert client.get("/datasets/birds/samples.png").status_code == 404


def test_a_job_on_an_uploaded_data_set_is_accepted(client, data_root, tmp_path, enqueued):
    _upload(client, _pets_zip(tmp_path))
    response = client.post("/jobs", json={**PRETRAIN, "dataset": "pets"})
    assert response.status_code == 202, response.text
    assert response.json()["dataset"] == "pets" and len(enqueued) == 1


def _entry(archive: zipfile.ZipFile, name: str, data: bytes, mode: int | None = None) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.external_attr = mode << 16
    archive.writestr(info, data)


def _crafted(*entries: tuple) -> bytes:
    """A valid pets layout plus the given (name, bytes[, unix mode]) entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            _entry(archive, *entry)
    return buffer.getvalue()


def _valid_entries(tmp_path: Path) -> list[tuple[str, bytes]]:
    folder = write_image_folder(tmp_path / "valid", ("cat", "dog"), n_train=2, n_test=1)
    return [
        (p.relative_to(folder).as_posix(), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()
    ]


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        ([("../evil.png", b"\x89PNG\r\n\x1a\n")], 422, "absolute path or '..'"),
        ([("train/cat/../../../evil.png", b"\x89PNG\r\n\x1a\n")], 422, "absolute path or '..'"),
        ([("/etc/evil.png", b"\x89PNG\r\n\x1a\n")], 422, "absolute path or '..'"),
        ([("train/cat/link.png", b"/etc/passwd", 0o120777)], 422, "symbolic link"),
        ([("train/cat/bomb.png", b"\x89PNG\r\n\x1a\n" + bytes(2_000_000))], 413, "zip bomb"),
        ([("train/cat/notes.txt", b"hello")], 415, "not a PNG or JPEG file"),
        (
            [("train/cat/fake.png", b"GIF89a" + bytes(64))],
            415,
            "not a PNG or JPEG image (by its first bytes)",
        ),
        ([("train/cat/deeper/x.png", b"\x89PNG\r\n\x1a\n")], 422, "not at train/<class>/<image>"),
        ([("train/bird/", b""), ("test/bird/", b"")], 422, "class folder(s) bird hold no PNG or JPEG"),
        ([("train/cat/trunc.png", b"\x89PNG\r\n\x1a\n" + bytes(16))], 422, "not a readable PNG or JPEG"),
    ],
)
def test_a_bad_zip_is_refused_and_leaves_nothing_on_disk(client, data_root, tmp_path, extra, code, says):
    response = _upload(client, _crafted(*_valid_entries(tmp_path), *extra))
    assert response.status_code == code, response.text
    assert says in response.text
    assert str(data_root) not in response.text
    assert files_under(data_root) == [] and not (data_root / "folders/pets").exists()


def test_a_zip_without_a_test_split_is_refused(client, data_root, tmp_path):
    train_only = [e for e in _valid_entries(tmp_path) if e[0].startswith("train/")]
    response = _upload(client, _crafted(*train_only))
    assert response.status_code == 422 and "the 'test' split is missing" in response.text
    assert files_under(data_root) == []


def test_more_entries_or_unpacked_bytes_than_the_limits_are_refused(client, env, data_root, tmp_path):
    entries = _valid_entries(tmp_path)
    env(DATA_DIR=data_root, DATASET_UPLOAD_MAX_FILES=len(entries) - 1)
    response = _upload(client, _crafted(*entries))
    assert response.status_code == 413 and "TRANSFERLAB_DATASET_UPLOAD_MAX_FILES" in response.text
    env(DATA_DIR=data_root, DATASET_UPLOAD_MAX_FILES=None, FOLDER_MAX_TOTAL_BYTES=1024)
    response = _upload(client, _crafted(*entries))
    assert response.status_code == 413 and "TRANSFERLAB_FOLDER_MAX_TOTAL_BYTES" in response.text
    assert files_under(data_root) == []


def test_a_body_over_the_upload_limit_is_413_before_it_is_read(client, env, data_root, tmp_path):
    env(DATA_DIR=data_root, MAX_DATASET_UPLOAD_BYTES=4096)
    response = _upload(client, _pets_zip(tmp_path))
    assert response.status_code == 413 and "over the limit of 4096 bytes" in response.text
    assert files_under(data_root) == []


def test_a_file_that_is_not_a_zip_is_refused(client, data_root):
    response = _upload(client, b"PK\x03\x04 not really")
    assert response.status_code == 422 and "not a readable zip" in response.text


@pytest.mark.parametrize(("name", "says"), [("mnist", "is a built-in"), ("Pets!", "not allowed")])
def test_a_name_that_is_a_builtins_or_not_allowed_is_422(client, data_root, tmp_path, name, says):
    response = _upload(client, _pets_zip(tmp_path), name=name)
    assert response.status_code == 422 and says in response.text
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert files_under(data_root) == []


def test_a_name_taken_is_409_and_keeps_the_first(client, data_root, tmp_path):
    assert _upload(client, _pets_zip(tmp_path)).status_code == 201
    before = sorted(files_under(data_root / "folders"))
    assert _upload(client, _pets_zip(tmp_path)).status_code == 409
    assert sorted(files_under(data_root / "folders")) == before


def test_a_job_on_absent_data_is_422_naming_the_folder_files_and_how_to_get_them(
    client, data_root, count_rows, enqueued
):
    from core.models import Job

    response = client.post("/jobs", json={**PRETRAIN, "dataset": "mnist"})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "pretrain", "dataset"]
    assert "<data root>/MNIST/raw/" in error["msg"] and "train-images-idx3-ubyte[.gz]" in error["msg"]
    assert "TRANSFERLAB_DOWNLOAD=true" in error["msg"] and "bench/prepare_data.py" in error["msg"]
    assert str(data_root) not in response.text
    assert count_rows(Job) == 0 and enqueued == []


def test_a_job_on_absent_data_is_accepted_when_the_worker_may_download_it(client, env, data_root):
    env(DATA_DIR=data_root, DOWNLOAD="true")
    assert client.post("/jobs", json={**PRETRAIN, "dataset": "mnist"}).status_code == 202


def test_the_check_can_be_turned_off_for_an_api_without_the_data_root(client, env, data_root):
    env(DATA_DIR=data_root, CHECK_DATA_AT_SUBMISSION="false")
    assert client.post("/jobs", json={**PRETRAIN, "dataset": "mnist"}).status_code == 202


def test_a_job_on_an_unknown_or_badly_laid_out_folder_set_is_422(client, data_root):
    response = client.post("/jobs", json={**PRETRAIN, "dataset": "birds"})
    assert response.status_code == 422 and "no folders/birds/ under the data root" in response.text
    write_image_folder(data_root / "folders" / "half", CLASSES)
    for f in (data_root / "folders/half/train/dog").iterdir():
        f.unlink()
    response = client.post("/jobs", json={**PRETRAIN, "dataset": "half"})
    assert response.status_code == 422 and "class folder(s) dog hold no PNG or JPEG" in response.text


def test_an_experiment_on_absent_data_is_422_naming_which_data_set(client, data_root, count_rows):
    from core.models import Experiment

    experiment = {
        "name": "study",
        "dataset": "mnist",
        "pretrain": {"dataset": "stl10", "model": "simple_cnn", "data": {"image_size": 32}},
    }
    response = client.post("/experiments", json=experiment)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "pretrain", "dataset"]
    assert "<data root>/stl10_binary/" in response.text
    assert count_rows(Experiment) == 0


def test_with_the_check_off_an_unknown_folder_set_is_queued(client, env, data_root):
    env(DATA_DIR=data_root, CHECK_DATA_AT_SUBMISSION="false")
    assert client.post("/jobs", json={**PRETRAIN, "dataset": "birds"}).status_code == 202


def test_the_estimate_of_a_job_on_a_folder_set_counts_its_images(client, env, data_root, tmp_path):
    _upload(client, _pets_zip(tmp_path))
    env(DATA_DIR=data_root, MAX_JOB_WORK=1)
    response = client.post("/jobs", json={**PRETRAIN, "dataset": "pets"})
    assert response.status_code == 422
    assert "x 32 training images (+ 4 validation a epoch, 18 test)" in response.text  # 36 less 10%


def test_an_experiment_on_folder_sets_counts_their_images(client, env, data_root, tmp_path):
    _upload(client, _pets_zip(tmp_path))
    env(DATA_DIR=data_root, MAX_JOB_WORK=1)
    experiment = {"name": "study", "dataset": "pets", "pretrain": {**PRETRAIN, "dataset": "pets"}}
    experiment["pretrain"].pop("kind")
    response = client.post("/experiments", json=experiment)
    assert response.status_code == 422 and "x 32 training images" in response.text
