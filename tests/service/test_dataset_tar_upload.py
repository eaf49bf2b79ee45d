"""POST /datasets with a tar (plain, .tar.gz, .tar.bz2, .tar.xz): the same data set as the zip gives, and
every refusal a tar can earn (links, devices, '..', a name twice, a decompression bomb), leaving
nothing on disk. The zip's own cases are in test_datasets.py."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from tests.formats import files_under, write_image_folder

CLASSES = ("cat", "dog")
PNG = b"\x89PNG\r\n\x1a\n"


def _upload(client, data: bytes, filename: str = "pets.tar.gz"):
    return client.post(
        "/datasets", data={"name": "pets"}, files={"file": (filename, data, "application/x-tar")}
    )


def _member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _tar(members: list[tuple], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in members:
            archive.addfile(info, data)
    return buffer.getvalue()


def _pets(tmp_path: Path, prefix: str = "pets/") -> list[tuple]:
    folder = write_image_folder(tmp_path / "source-images", CLASSES, n_train=2, n_test=1)
    return [
        _member(prefix + p.relative_to(folder).as_posix(), p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"])
def test_an_uploaded_tar_becomes_a_folder_data_set(client, data_root, tmp_path, mode):
    response = _upload(client, _tar(_pets(tmp_path), mode))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "pets" and body["classes"] == list(CLASSES)
    assert body["split_sizes"] == {"train": 4, "test": 2}
    assert len(list((data_root / "folders/pets/train/cat").iterdir())) == 2
    assert not (data_root / "folders/.uploads").exists()


def test_a_tar_made_with_dot_paths_and_folder_entries_reads_the_same(client, data_root, tmp_path):
    folders = [
        _member(f"./{split}/{c}/", kind=tarfile.DIRTYPE) for split in ("train", "test") for c in CLASSES
    ]
    response = _upload(client, _tar([_member("./", kind=tarfile.DIRTYPE), *folders, *_pets(tmp_path, "./")]))
    assert response.status_code == 201, response.text
    assert response.json()["split_sizes"] == {"train": 4, "test": 2}


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        ([_member("train/cat/link.png", kind=tarfile.SYMTYPE, link="/etc/passwd")], 422, "is a link"),
        ([_member("train/cat/hard.png", kind=tarfile.LNKTYPE, link="train/cat/0.png")], 422, "is a link"),
        ([_member("train/cat/fifo.png", kind=tarfile.FIFOTYPE)], 422, "neither a file nor a folder"),
        ([_member("train/cat/dev.png", kind=tarfile.CHRTYPE)], 422, "neither a file nor a folder"),
        ([_member("../evil.png", PNG)], 422, "absolute path or '..'"),
        ([_member("/etc/evil.png", PNG)], 422, "absolute path or '..'"),
        ([_member("train/cat/notes.txt", b"hello")], 415, "not a PNG or JPEG file"),
        ([_member("train/cat/fake.png", b"GIF89a" + bytes(64))], 415, "not a PNG or JPEG image"),
    ],
)
def test_a_bad_tar_is_refused_and_leaves_nothing_on_disk(client, data_root, tmp_path, extra, code, says):
    response = _upload(client, _tar([*_pets(tmp_path, ""), *extra]))
    assert response.status_code == code, response.text
    assert says in response.text and str(data_root) not in response.text
    assert files_under(data_root) == [] and not (data_root / "folders/pets").exists()


def test_a_tar_that_holds_one_path_twice_is_refused(client, data_root, tmp_path):
    members = _pets(tmp_path, "")
    again = _member(members[0][0].name, members[0][1].getvalue())
    response = _upload(client, _tar([*members, again]))
    assert response.status_code == 422 and "appears twice" in response.text
    assert files_under(data_root) == []


def test_a_tar_gz_that_unpacks_past_the_limit_is_refused_while_it_is_read(client, env, data_root, tmp_path):
    env(DATA_DIR=data_root, FOLDER_MAX_TOTAL_BYTES=1024, DATASET_UPLOAD_MAX_FILES=5)
    bomb = _tar([_member("train/cat/0.png", PNG + bytes(20_000_000))])
    assert len(bomb) < 100_000  # 20 MB of zeros gzip to a few KB
    response = _upload(client, bomb)
    assert response.status_code == 413 and "TRANSFERLAB_FOLDER_MAX_TOTAL_BYTES" in response.text
    assert "20000008" not in response.text  # stopped by the counted stream, not after reading it all
    assert files_under(data_root) == []


def test_a_tar_with_more_members_than_the_limit_is_refused(client, env, data_root, tmp_path):
    members = _pets(tmp_path, "")
    env(DATA_DIR=data_root, DATASET_UPLOAD_MAX_FILES=len(members) - 1)
    response = _upload(client, _tar(members))
    assert response.status_code == 413 and "TRANSFERLAB_DATASET_UPLOAD_MAX_FILES" in response.text
    assert files_under(data_root) == []


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"hello, not an archive", "not a readable zip or tar archive"),
        (gzip.compress(b"a gzip, but no tar inside"), "not a readable tar archive"),
    ],
)
def test_a_file_that_is_neither_a_zip_nor_a_tar_is_refused(client, data_root, data, says):
    response = _upload(client, data)
    assert response.status_code == 422 and says in response.text
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_a_truncated_tar_gz_is_refused(client, data_root, tmp_path):
    whole = _tar(_pets(tmp_path))
    response = _upload(client, whole[: len(whole) // 2])
    assert response.status_code == 422, response.text
    assert "not a readable tar archive" in response.text or "cannot be unpacked" in response.text
    assert files_under(data_root) == []
