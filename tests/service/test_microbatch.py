"""Concurrent predictions for one checkpoint share forward passes; a lone request does not wait."""

import threading
import time

import pytest
import torch

from service.microbatch import MicroBatcher


def doubling(batch: torch.Tensor) -> torch.Tensor:
    return batch * 2


def test_each_request_gets_its_own_rows_back():
    batcher = MicroBatcher(doubling)
    results = {}

    def call(i: int) -> None:
        with batcher.request() as request:
            results[i] = request.submit(torch.full((i + 1, 2), float(i)))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert torch.equal(results[i], torch.full((i + 1, 2), 2.0 * i))
    batcher.close()


def test_requests_that_are_preparing_are_waited_for_and_batched_together():
    batcher = MicroBatcher(doubling, max_wait_seconds=0.5)
    barrier = threading.Barrier(4)

    def call() -> None:
        with batcher.request() as request:
            barrier.wait()  # all four announced before any submits
            request.submit(torch.ones(1, 2))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert batcher.batches == 1
    batcher.close()


def test_a_lone_request_runs_at_once():
    batcher = MicroBatcher(doubling, max_wait_seconds=1.0)
    started = time.perf_counter()
    with batcher.request() as request:
        request.submit(torch.ones(1, 2))
    assert time.perf_counter() - started < 0.2  # far below the 1 s bound: nobody else was coming
    batcher.close()


def test_a_failing_forward_reaches_every_waiting_request():
    def broken(batch):
        raise RuntimeError("boom")

    batcher = MicroBatcher(broken)
    with pytest.raises(RuntimeError, match="boom"), batcher.request() as request:
        request.submit(torch.ones(1, 2))
    batcher.close()


def test_a_request_that_fails_before_submitting_does_not_hold_up_others():
    batcher = MicroBatcher(doubling, max_wait_seconds=5.0)
    with pytest.raises(ValueError), batcher.request():
        raise ValueError("bad image")
    started = time.perf_counter()
    with batcher.request() as request:
        request.submit(torch.ones(1, 2))
    assert time.perf_counter() - started < 1.0
    batcher.close()


def test_a_lone_request_runs_its_forward_pass_in_its_own_thread():
    threads = []

    def recording(batch):
        threads.append(threading.current_thread())
        return batch

    batcher = MicroBatcher(recording)
    with batcher.request() as request:
        request.submit(torch.ones(1, 2))
    assert threads == [threading.current_thread()] and (batcher.inline, batcher.batches) == (1, 0)
    batcher.close()


def test_a_request_arriving_while_a_batch_is_collected_joins_it():
    batcher = MicroBatcher(doubling, max_wait_seconds=0.5)
    barrier = threading.Barrier(3)

    def call() -> None:
        with batcher.request() as request:
            barrier.wait()
            request.submit(torch.ones(1, 2))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (batcher.batches, batcher.inline) == (1, 0)
    batcher.close()


def test_a_forward_pass_never_takes_more_than_max_batch_rows():
    sizes = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(batch.shape[0])
        return batch * 2

    batcher = MicroBatcher(recording, max_wait_seconds=0.5, max_batch=4)
    barrier = threading.Barrier(3)
    results = {}

    def call(i: int) -> None:
        with batcher.request() as request:
            barrier.wait()  # all three announced: the batcher waits for them, then packs
            results[i] = request.submit(torch.full((3, 2), float(i)))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(sizes) == 9 and max(sizes) <= 4  # 3 + 3 + 3 rows: never two requests in one pass
    assert all(torch.equal(results[i], torch.full((3, 2), 2.0 * i)) for i in range(3))
    batcher.close()
