"""What one /predict may cost: the model-input pixel budget (422), the concurrency bound (429), the
checkpoint load rate (429), each with what was over and what is allowed; and large images decoded by
one thread."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI

import service.routes.predict as predict_route
from service.inference import get_predictor_cache
from service.predict_limits import (
    FORWARD_INPUT_PIXELS,
    LARGE_IMAGE_PIXELS,
    Busy,
    LoadRate,
    PredictionSlots,
    decoding,
    prediction_slots_dependency,
    rows_per_forward,
)
from tests.service.test_predict import png, post

# ---------------------------------------------------------------- the input-pixel budget


def test_files_times_input_pixels_over_the_budget_is_422_naming_files_before_any_file_is_opened(
    client, env, make_job, make_checkpoint_row, monkeypatch
):
    env(MAX_PREDICT_INPUT_PIXELS=2048)  # two 32x32 inputs
    row = make_checkpoint_row(make_job(status="succeeded"))  # image_size 32, no files: never loaded
    opened: list[object] = []

    def recording(*args: object) -> list:
        opened.append(args)
        return []

    monkeypatch.setattr(predict_route, "check_uploads", recording)
    monkeypatch.setattr(predict_route, "decode", recording)

    response = post(client, [(f"{i}.png", png()) for i in range(3)], checkpoint=row.id)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "files"]
    assert "3 files x 32x32" in error["msg"] and "3072" in error["msg"] and "2048" in error["msg"]
    assert "TRANSFERLAB_MAX_PREDICT_INPUT_PIXELS" in error["msg"] and "at most 2 files" in error["msg"]
    assert opened == []


def test_a_request_at_the_budget_is_answered(client, env, trained_checkpoint):
    env(MAX_PREDICT_INPUT_PIXELS=2048)

    response = post(client, [("a.png", png()), ("b.png", png())], checkpoint=trained_checkpoint.id)

    assert response.status_code == 200


def test_a_forward_pass_holds_at_most_forward_input_pixels():
    assert rows_per_forward(512) == 1
    assert rows_per_forward(96) * 96 * 96 <= FORWARD_INPUT_PIXELS < (rows_per_forward(96) + 1) * 96 * 96
    assert rows_per_forward(16) == 128  # small images: capped in rows


# ---------------------------------------------------------------- concurrent predictions


def test_a_request_past_the_concurrency_limit_is_429_with_retry_after(
    app, client, trained_checkpoint, monkeypatch
):
    slots = PredictionSlots(1, waiting=0)
    app.dependency_overrides[prediction_slots_dependency] = lambda: slots
    cache = get_predictor_cache()
    loading, release = threading.Event(), threading.Event()
    real_load = cache._loader

    def slow_load(directory, sha256):
        loading.set()
        release.wait(10)
        return real_load(directory, sha256)

    monkeypatch.setattr(cache, "_loader", slow_load)
    first: dict[str, Any] = {}

    def hold_the_slot() -> None:
        first["response"] = post(client, [("a.png", png())], checkpoint=trained_checkpoint.id)

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    assert loading.wait(10)

    refused = post(client, [("b.png", png())], checkpoint=trained_checkpoint.id)
    release.set()
    holder.join(10)

    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    detail = refused.json()["detail"]
    assert "limit of 1 requests at once" in detail and "TRANSFERLAB_MAX_CONCURRENT_PREDICTIONS" in detail
    assert first["response"].status_code == 200


def test_the_slots_follow_the_setting(env):
    env(MAX_CONCURRENT_PREDICTIONS=3)

    slots = asyncio.run(prediction_slots_dependency())

    assert (slots.limit, slots.waiting) == (3, 9)


def test_a_waiting_request_gets_a_slot_freed_within_its_wait():
    slots = PredictionSlots(1, waiting=1, wait_seconds=5)
    held, done = threading.Event(), []

    def hold_briefly():
        with slots.hold():
            held.set()
            time.sleep(0.1)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    held.wait(5)
    with slots.hold():
        done.append(slots.running)
    thread.join()

    assert done == [1]


def test_a_request_that_waits_too_long_is_busy():
    slots = PredictionSlots(1, waiting=1, wait_seconds=0.05)

    with slots.hold(), pytest.raises(Busy, match="none came free within 0.05 s"), slots.hold():
        pass
    assert (slots.running, slots.waiters) == (0, 0)


def test_requests_past_the_waiting_room_are_busy_at_once():
    slots = PredictionSlots(1, waiting=0, wait_seconds=60)
    started = time.monotonic()

    with slots.hold(), pytest.raises(Busy) as refused, slots.hold():
        pass

    assert time.monotonic() - started < 1
    assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "1"}


# ---------------------------------------------------------------- large images


def test_large_images_are_decoded_by_one_thread_in_arrival_order_and_small_ones_in_place():
    order, threads = [], set()
    release = threading.Event()

    def work(name: str):
        def run() -> str:
            if name == "first":
                release.wait(10)
            order.append(name)
            threads.add(threading.current_thread().name)
            return name

        return run

    callers = [
        threading.Thread(target=decoding, args=(LARGE_IMAGE_PIXELS + 1, work(name)))
        for name in ("first", "second")
    ]
    for caller in callers:
        caller.start()
        time.sleep(0.05)  # first is taken by the decoding thread before second arrives
    small = decoding(LARGE_IMAGE_PIXELS, work("small"))
    release.set()
    for caller in callers:
        caller.join(10)

    assert small == "small" and order == ["small", "first", "second"]
    assert threads == {threading.current_thread().name, "predict-decode_0"}


# ---------------------------------------------------------------- checkpoint loads


def test_loads_past_the_rate_are_429_while_loaded_checkpoints_still_answer(
    client, env, trained_checkpoint, make_job, make_checkpoint_row
):
    env(MAX_MODEL_LOADS_PER_MINUTE=2)
    same_files = {
        "path": trained_checkpoint.path,
        "sha256": trained_checkpoint.sha256,
        "input_spec": trained_checkpoint.input_spec,
    }
    first, second, third = (
        make_checkpoint_row(make_job(status="succeeded", dataset="mnist"), **same_files) for _ in range(3)
    )

    statuses = [post(client, [("a.png", png())], checkpoint=row.id).status_code for row in (first, second)]
    refused = post(client, [("a.png", png())], checkpoint=third.id)
    hit = post(client, [("a.png", png())], checkpoint=first.id)

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "TRANSFERLAB_MAX_MODEL_LOADS_PER_MINUTE" in refused.json()["detail"]
    assert hit.status_code == 200
    assert (get_predictor_cache().misses, get_predictor_cache().hits) == (2, 1)


def test_a_load_leaves_the_window_after_a_minute():
    now = [1000.0]
    rate = LoadRate(2, clock=lambda: now[0])
    rate.take()
    now[0] += 30
    rate.take()

    with pytest.raises(Busy) as refused:
        rate.take()
    assert refused.value.retry_after_seconds == 30
    now[0] += 30
    rate.take()  # the first load has left the window


# ---------------------------------------------------------------- OpenAPI


def test_predict_documents_422_and_429_with_retry_after():
    app = FastAPI()
    app.include_router(predict_route.router)
    schema = app.openapi()
    responses = schema["paths"]["/predict"]["post"]["responses"]

    assert "TRANSFERLAB_MAX_PREDICT_INPUT_PIXELS" in responses["422"]["description"]
    ref = responses["422"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[-1] in schema["components"]["schemas"]
    assert "TRANSFERLAB_MAX_CONCURRENT_PREDICTIONS" in responses["429"]["description"]
    assert "Retry-After" in responses["429"]["headers"]
