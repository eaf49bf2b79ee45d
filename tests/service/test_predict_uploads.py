"""POST /predict and PNG metadata: text dropped on opening, Pillow's text limits small, chunk floods
refused before Pillow parses them, and files decoded one at a time."""

from __future__ import annotations

import io
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Sequence

import pytest
from PIL import PngImagePlugin

import service.routes.predict as predict_route
from service import uploads
from service.inference import get_predictor_cache
from tests.service.test_predict import png, post

# The reported file had 63 zTXt chunks of 1 MiB each in 66 KB (refused by their count alone); 30 pass
# the count, and Pillow's default limits would keep all 30 MiB.
BOMB_CHUNKS = 30


def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def ztxt(key: bytes, size: int, fill: bytes = b"\0") -> bytes:
    return chunk(b"zTXt", key + b"\0\0" + zlib.compress(fill * size, 9))


def with_chunks(before: list[bytes], after: Sequence[bytes] = ()) -> bytes:
    """An 8x8 grey PNG with extra chunks before its image data (after IHDR) and after it (before IEND)."""
    plain = png("L", (8, 8), 100)
    header_end = 8 + 25  # signature, IHDR
    iend = plain.rindex(b"IEND") - 4
    return plain[:header_end] + b"".join(before) + plain[header_end:iend] + b"".join(after) + plain[iend:]


def text_bomb() -> bytes:
    return with_chunks([ztxt(b"k%d" % i, 2**20 - 16) for i in range(BOMB_CHUNKS)])


@pytest.fixture
def row(make_job, make_checkpoint_row):
    """A checkpoint row without files: anything refused before loading is answered with it."""
    return make_checkpoint_row(make_job(status="succeeded"))


@pytest.fixture
def decoded(monkeypatch):
    """Every image the route decodes, with what was alive when it was decoded."""
    seen: list[dict] = []
    alive = [0]
    real = predict_route.decode

    def recording(upload):
        image = real(upload)
        alive[0] += 1
        seen.append(
            {
                "position": upload.position,
                "alive": alive[0],
                "info": dict(image.info),
                "image": image,
                "thread": threading.current_thread().name,
            }
        )
        close = image.close

        def closing():
            alive[0] -= 1
            close()

        setattr(image, "close", closing)  # noqa: B010 (mypy refuses assigning to a method)
        return image

    monkeypatch.setattr(predict_route, "decode", recording)
    return seen


def test_pillow_text_limits_are_small_once_uploads_are_imported():
    assert uploads.PngImagePlugin is PngImagePlugin
    assert PngImagePlugin.MAX_TEXT_CHUNK <= 64 * 1024
    assert PngImagePlugin.MAX_TEXT_MEMORY <= 256 * 1024


def test_a_text_bomb_is_413_without_the_process_holding_its_text(client, row):
    bomb = text_bomb()
    assert len(bomb) < 35_000  # 30 MiB of text when decompressed

    tracemalloc.start()
    try:
        response = post(client, [("bomb.png", bomb)], checkpoint=row.id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "'bomb.png'" in detail and "metadata" in detail and str(PngImagePlugin.MAX_TEXT_CHUNK) in detail
    assert peak < 8 * 2**20  # 30 MiB with Pillow's default limits


def test_a_text_bomb_after_the_image_data_is_413(client, trained_checkpoint):
    late = with_chunks([], after=[ztxt(b"Comment", 2**20)])

    response = post(client, [("ok.png", png()), ("late.png", late)], checkpoint=trained_checkpoint.id)

    assert response.status_code == 413
    assert "'late.png'" in response.json()["detail"]


def test_text_over_the_total_limit_is_413_naming_it(client, row):
    size = PngImagePlugin.MAX_TEXT_CHUNK - 64
    many = with_chunks([ztxt(b"k%d" % i, size) for i in range(PngImagePlugin.MAX_TEXT_MEMORY // size + 1)])

    response = post(client, [("many.png", many)], checkpoint=row.id)

    assert response.status_code == 413
    assert f"over {PngImagePlugin.MAX_TEXT_MEMORY} bytes of text" in response.json()["detail"]


def test_text_chunks_are_dropped_when_a_file_is_opened_and_after_it_is_decoded(
    client, trained_checkpoint, decoded
):
    tagged = with_chunks(
        [chunk(b"tEXt", b"Title\0" + b"t" * 4000), ztxt(b"Comment", 30_000, b"c")],
        after=[ztxt(b"Trailer", 30_000, b"z")],
    )
    opened = uploads._open(io.BytesIO(tagged))

    response = post(client, [("tagged.png", tagged)], checkpoint=trained_checkpoint.id)

    assert response.status_code == 200, response.text
    assert not {"Title", "Comment"} & set(opened.info)
    [seen] = decoded
    assert not {"Title", "Comment", "Trailer"} & set(seen["info"])
    assert seen["image"].text == {}


def test_a_flood_of_text_chunks_is_413_before_any_is_inflated(client, row, monkeypatch):
    inflated: list[int] = []
    real = PngImagePlugin._safe_zlib_decompress

    def counting(data: bytes) -> bytes:
        inflated.append(len(data))
        return real(data)

    monkeypatch.setattr(PngImagePlugin, "_safe_zlib_decompress", counting)
    flood = with_chunks([ztxt(b"", 60_000)] * (uploads.MAX_PNG_METADATA_CHUNKS + 1))

    response = post(client, [("flood.png", flood)], checkpoint=row.id)

    assert response.status_code == 413
    assert "text and ICC profile chunks" in response.json()["detail"]
    assert inflated == []


def test_a_png_of_too_many_chunks_is_413(client, row):
    crowded = with_chunks([chunk(b"tIME", b"\0" * 7)] * uploads.MAX_PNG_CHUNKS)

    response = post(client, [("crowded.png", crowded)], checkpoint=row.id)

    assert response.status_code == 413
    assert f"more than {uploads.MAX_PNG_CHUNKS} chunks" in response.json()["detail"]


def test_files_are_decoded_one_at_a_time_in_upload_order(client, trained_checkpoint, decoded):
    files = [(f"{i}.png", png("RGB", (40, 40), (i * 50, 0, 0))) for i in range(5)]

    response = post(client, files, checkpoint=trained_checkpoint.id)

    assert response.status_code == 200
    assert [d["position"] for d in decoded] == [0, 1, 2, 3, 4]
    assert max(d["alive"] for d in decoded) == 1


def test_a_large_image_is_decoded_by_the_shared_decoding_thread(
    client, trained_checkpoint, decoded, monkeypatch
):
    monkeypatch.setattr("service.predict_limits.LARGE_IMAGE_PIXELS", 30 * 30)
    files = [("small.png", png("L", (30, 30))), ("large.png", png("L", (31, 31)))]

    response = post(client, files, checkpoint=trained_checkpoint.id)

    assert response.status_code == 200
    small, large = decoded
    assert not small["thread"].startswith("predict-decode") and large["thread"] == "predict-decode_0"


def test_a_group_is_at_most_one_forward_pass(client, settings, trained_checkpoint, monkeypatch):
    monkeypatch.setattr("service.inference.rows_per_forward", lambda side: 2)
    files = [(f"{i}.png", png()) for i in range(5)]

    response = post(client, files, checkpoint=trained_checkpoint.id)

    assert len(response.json()["predictions"]) == 5
    directory = (settings.checkpoints_dir / trained_checkpoint.path).resolve()
    batcher = get_predictor_cache().get(trained_checkpoint.id, directory, trained_checkpoint.sha256).batcher
    assert batcher.max_batch == 2
    assert batcher.inline + batcher.batches == 3  # 2 + 2 + 1 images


def test_a_corrupt_second_file_is_422_naming_its_position(client, trained_checkpoint):
    broken = png("RGB", (64, 64))
    truncated = broken[: len(broken) // 2]

    response = post(client, [("ok.png", png()), ("cut.png", truncated)], checkpoint=trained_checkpoint.id)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "files", 1] and "'cut.png'" in error["msg"]
