"""The predictor cache: least recently used out first, one load per checkpoint, errors not cached,
loads limited per minute."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine.errors import CheckpointError
from service.inference import PredictorCache
from service.predict_limits import Busy, LoadRate


class Loads:
    def __init__(self, delay: float = 0.0):
        self.calls: list[str] = []
        self.delay = delay

    def __call__(self, directory: Path, sha256: str):
        self.calls.append(directory.name)
        time.sleep(self.delay)
        return f"predictor:{directory.name}"


def test_least_recently_used_is_evicted_first():
    loads = Loads()
    cache = PredictorCache(capacity=2, loader=loads)

    cache.get("a", Path("a"), "sa")
    cache.get("b", Path("b"), "sb")
    cache.get("a", Path("a"), "sa")  # a is now the most recent
    cache.get("c", Path("c"), "sc")  # evicts b

    assert "a" in cache and "c" in cache and "b" not in cache
    assert loads.calls == ["a", "b", "c"]
    assert (cache.hits, cache.misses) == (1, 3)


def test_concurrent_requests_for_one_checkpoint_load_it_once():
    loads = Loads(delay=0.2)
    cache = PredictorCache(capacity=2, loader=loads)
    results = []

    threads = [
        threading.Thread(target=lambda: results.append(cache.get("a", Path("a"), "s"))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert loads.calls == ["a"]
    assert results == ["predictor:a"] * 4


def test_a_changed_sha256_is_loaded_afresh():
    loads = Loads()
    cache = PredictorCache(capacity=2, loader=loads)

    cache.get("a", Path("a"), "old")
    cache.get("a", Path("a"), "new")

    assert loads.calls == ["a", "a"]


def test_a_failed_load_is_not_cached():
    def refuse(directory: Path, sha256: str):
        raise CheckpointError("sha256 mismatch")

    cache = PredictorCache(capacity=2, loader=refuse)

    for _ in range(2):
        with pytest.raises(CheckpointError):
            cache.get("a", Path("a"), "s")
    assert len(cache) == 0


def test_a_miss_past_the_load_rate_is_busy_and_nothing_is_loaded():
    loads = Loads()
    cache = PredictorCache(capacity=4, loader=loads, load_rate=LoadRate(2))
    cache.get("a", Path("a"), "s")
    cache.get("b", Path("b"), "s")

    with pytest.raises(Busy) as refused:
        cache.get("c", Path("c"), "s")

    assert refused.value.status_code == 429 and 1 <= refused.value.retry_after_seconds <= 60
    assert loads.calls == ["a", "b"] and "c" not in cache


def test_a_hit_never_takes_a_load():
    loads = Loads()
    cache = PredictorCache(capacity=4, loader=loads, load_rate=LoadRate(1))
    cache.get("a", Path("a"), "s")

    for _ in range(5):
        cache.get("a", Path("a"), "s")

    assert (cache.misses, cache.hits) == (1, 5)


def test_a_failed_load_counts_against_the_rate():
    def refuse(directory: Path, sha256: str):
        raise CheckpointError("sha256 mismatch")

    cache = PredictorCache(capacity=2, loader=refuse, load_rate=LoadRate(1))
    with pytest.raises(CheckpointError):
        cache.get("a", Path("a"), "s")

    with pytest.raises(Busy):
        cache.get("a", Path("a"), "s")  # it hashed the file: the next try waits like any load
