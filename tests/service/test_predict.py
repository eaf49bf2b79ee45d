"""POST /predict: uploads checked before decoding, any PNG/JPEG mode, the LRU cache, sha256 refusal."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from engine.checkpoint import WEIGHTS_FILE
from service.inference import get_predictor_cache
from service.server_timing import parse_server_timing


def png(mode: str = "L", size: tuple[int, int] = (28, 28), color=128) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, size, color)
    if mode == "P":
        image.putpalette([i % 256 for i in range(768)])
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    color = (0, 128, 128, 0) if mode == "CMYK" else 200 if mode == "L" else (10, 200, 30)
    Image.new(mode, size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds one row of data: decoding it would need
    gigabytes, reading its header needs nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    idat = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def post(client, files, **form):
    return client.post(
        "/predict",
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
        data=form,
    )


@pytest.fixture
def checkpoint(trained_checkpoint):
    return trained_checkpoint


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("grey.png", png("L")),
        ("rgb.png", png("RGB", (50, 70), (255, 0, 0))),
        ("rgba.png", png("RGBA", (28, 28), (255, 255, 255, 128))),
        ("palette.png", png("P", (16, 16), 7)),
        ("la.png", png("LA", (20, 20), (200, 255))),
        ("sixteen.png", png("I;16", (28, 28), 40000)),
        ("bilevel.png", png("1", (28, 28), 1)),
        ("photo.jpg", jpeg("RGB")),
        ("grey.jpg", jpeg("L")),
        ("cmyk.jpg", jpeg("CMYK")),
    ],
)
def test_png_and_jpeg_of_any_mode_are_classified(client, checkpoint, name, data):
    response = post(client, [(name, data)], checkpoint=checkpoint.id)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checkpoint"] == checkpoint.id
    [prediction] = body["predictions"]
    assert prediction["filename"] == name
    assert prediction["label"] == checkpoint.class_names[prediction["index"]]
    assert 0.0 <= prediction["probability"] <= 1.0
    assert len(prediction["top"]) == 3
    assert prediction["top"][0] == {"label": prediction["label"], "probability": prediction["probability"]}


def test_several_files_answer_in_upload_order(client, checkpoint):
    files = [(f"{i}.png", png("L", (10 + i, 12), i * 20)) for i in range(5)]

    body = post(client, files, checkpoint=checkpoint.id).json()

    assert [p["filename"] for p in body["predictions"]] == [f"{i}.png" for i in range(5)]


def test_many_large_images_are_decoded_in_bounded_groups(client, env, checkpoint):
    # Pixel budget 64x64: each 60x60 image is decoded in a group of its own; all are answered.
    env(MAX_IMAGE_PIXELS=64 * 64)
    files = [(f"{i}.png", png("RGB", (60, 60), (i * 40, 0, 0))) for i in range(4)]

    body = post(client, files, checkpoint=checkpoint.id).json()

    assert len(body["predictions"]) == 4


def test_the_response_says_where_the_server_time_went(client, checkpoint):
    response = post(client, [("a.png", png()), ("b.png", png())], checkpoint=checkpoint.id)

    timing = parse_server_timing(response.headers["server-timing"])
    assert list(timing) == ["prepare", "model", "total"]
    assert timing["total"] >= timing["prepare"] + timing["model"] > 0


def test_predict_by_job_id_uses_that_jobs_checkpoint(client, checkpoint):
    response = post(client, [("a.png", png())], job=checkpoint.job_id)

    assert response.status_code == 200
    assert response.json()["checkpoint"] == checkpoint.id


def test_second_call_is_served_from_the_cache(client, checkpoint):
    cache = get_predictor_cache()

    post(client, [("a.png", png())], checkpoint=checkpoint.id)
    post(client, [("b.png", png())], checkpoint=checkpoint.id)

    assert (cache.misses, cache.hits) == (1, 1)
    assert checkpoint.id in cache


def test_tampered_weights_are_refused_and_never_loaded(client, settings, checkpoint):
    weights = settings.checkpoints_dir / checkpoint.path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    response = post(client, [("a.png", png())], checkpoint=checkpoint.id)

    assert response.status_code == 500
    detail = response.json()["detail"]
    assert checkpoint.id in detail and "sha256" in detail and "not be loaded" in detail
    assert checkpoint.id not in get_predictor_cache()


def test_database_sha_mismatch_is_refused(client, session, checkpoint):
    checkpoint.sha256 = "f" * 64  # the file agrees with its sidecar, not with the database
    session.commit()

    response = post(client, [("a.png", png())], checkpoint=checkpoint.id)

    assert response.status_code == 500
    assert "the database" in response.json()["detail"]


# ---------------------------------------------------------------- refusals


def test_a_file_that_is_not_an_image_is_415_naming_field_file_and_types(
    client, make_job, make_checkpoint_row
):
    row = make_checkpoint_row(make_job(status="succeeded"))

    response = post(client, [("ok.png", png()), ("notes.txt", b"hello, not an image")], checkpoint=row.id)

    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "files" in detail and "'notes.txt'" in detail and "image/png, image/jpeg" in detail


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_image_formats_are_415(client, make_job, make_checkpoint_row, fmt):
    row = make_checkpoint_row(make_job(status="succeeded"))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format=fmt)

    response = post(client, [(f"x.{fmt.lower()}", buffer.getvalue())], checkpoint=row.id)

    assert response.status_code == 415


def test_over_the_pixel_limit_is_413_from_the_header(client, env, make_job, make_checkpoint_row):
    env(MAX_IMAGE_PIXELS=1_000_000)
    row = make_checkpoint_row(make_job(status="succeeded"))

    response = post(client, [("huge.png", png_header_only(2000, 1000))], checkpoint=row.id)

    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "'huge.png'" in detail and "2000x1000" in detail and "1000000" in detail


def test_a_decompression_bomb_header_is_413(client, make_job, make_checkpoint_row):
    row = make_checkpoint_row(make_job(status="succeeded"))

    response = post(client, [("bomb.png", png_header_only(100_000, 100_000))], checkpoint=row.id)

    assert response.status_code == 413
    assert "'bomb.png'" in response.json()["detail"]


def test_a_truncated_image_is_422(client, checkpoint):
    data = png("RGB", (64, 64))
    truncated = data[: len(data) // 2]

    response = post(client, [("cut.png", truncated)], checkpoint=checkpoint.id)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "files", 0] and "'cut.png'" in error["msg"]


def test_too_many_files_is_413(client, env, make_job, make_checkpoint_row):
    env(MAX_FILES_PER_REQUEST=2)
    row = make_checkpoint_row(make_job(status="succeeded"))

    response = post(client, [(f"{i}.png", png()) for i in range(3)], checkpoint=row.id)

    assert response.status_code == 413
    assert "files" in response.json()["detail"] and "2" in response.json()["detail"]


@pytest.mark.parametrize("form", [{}, {"checkpoint": "a", "job": "b"}, {"checkpoint": "", "job": ""}])
def test_both_or_neither_of_checkpoint_and_job_is_422_naming_both(client, form):
    response = post(client, [("a.png", png())], **form)

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [["body", "checkpoint"], ["body", "job"], ["body", "model"]]
    assert all("checkpoint" in e["msg"] and "job" in e["msg"] and "model" in e["msg"] for e in errors)


def test_no_files_is_422_naming_files(client, checkpoint):
    response = client.post("/predict", data={"checkpoint": checkpoint.id})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "files"]


def test_unknown_checkpoint_is_404(client):
    response = post(client, [("a.png", png())], checkpoint="nope")

    assert response.status_code == 404
    assert "checkpoint" in response.json()["detail"]


def test_unknown_job_is_404(client):
    response = post(client, [("a.png", png())], job="nope")

    assert response.status_code == 404
    assert "job" in response.json()["detail"]


def test_job_without_checkpoint_is_409(client, make_job):
    job = make_job(status="running")

    response = post(client, [("a.png", png())], job=job.id)

    assert response.status_code == 409
    assert "running" in response.json()["detail"]
