"""A small LRU cache of loaded checkpoints, shared by the request threads.

A checkpoint is loaded once (sha256 checked against the database's copy, safetensors only) and
then answers every /predict for it until it is evicted. Two requests for the same uncached
checkpoint load it once; requests for other checkpoints are not held up by that load. Loads (each
re-hashes and reads the weights: 2.1 s of CPU for vgg11_bn's 491 MB) are limited to
TRANSFERLAB_MAX_MODEL_LOADS_PER_MINUTE; past it a miss is refused with 429, a hit never is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import get_settings
from service.lru import LRU
from service.predict_limits import LoadRate, rows_per_forward

if TYPE_CHECKING:  # engine.predict imports torch; the app imports this module at start.
    from engine.predict import Predictor
    from service.microbatch import MicroBatcher


@dataclass
class ServedModel:
    """A loaded checkpoint and the thread that batches concurrent requests for it."""

    predictor: Predictor
    batcher: MicroBatcher

    def close(self) -> None:
        self.batcher.close()


Loader = Callable[[Path, str], Any]


def _load(directory: Path, sha256: str) -> ServedModel:
    from engine.predict import Predictor
    from service.microbatch import MicroBatcher

    predictor = Predictor.load(directory, expected_sha256=sha256, device="cpu")
    rows = rows_per_forward(predictor.input_spec.image_size)  # a pass's memory grows with its pixels
    return ServedModel(predictor, MicroBatcher(predictor.forward, max_batch=rows))


def _close(item: Any) -> None:
    if hasattr(item, "close"):
        item.close()  # a ServedModel stops its batcher thread


class PredictorCache:
    def __init__(self, capacity: int, loader: Loader = _load, load_rate: LoadRate | None = None):
        self.capacity = capacity
        self._loader = loader
        self.load_rate = load_rate  # None: loads are not limited
        self._items = LRU(capacity, on_evict=self._evicted)
        self._lock = threading.Lock()  # guards _loading and the counters
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # models dropped for newer ones or forgotten (GET /metrics)

    def _evicted(self, item: Any) -> None:
        with self._lock:
            self.evictions += 1
        _close(item)

    def _hit(self, key: tuple[str, str]) -> Any | None:
        item = self._items.get(key)
        if item is not None:
            with self._lock:
                self.hits += 1
        return item

    def get(self, checkpoint_id: str, directory: Path, sha256: str) -> Any:
        """The loaded model (a ServedModel by default); CheckpointError when the file fails its check,
        Busy (429) when a miss would load more than the load rate allows."""
        key = (checkpoint_id, sha256)  # a re-recorded sha256 is a different checkpoint
        if (item := self._hit(key)) is not None:
            return item
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            if (item := self._hit(key)) is not None:  # another thread loaded it while we waited
                return item
            try:
                if self.load_rate is not None:
                    self.load_rate.take()  # a failed load counts too: it hashed the file
                item = self._loader(directory, sha256)
            finally:  # a failed load is not kept: the next request tries again
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self.misses += 1
            return self._items.put(key, item)

    def __contains__(self, checkpoint_id: str) -> bool:
        return any(key[0] == checkpoint_id for key in self._items.keys() if isinstance(key, tuple))

    def __len__(self) -> int:
        return len(self._items)

    def forget(self, checkpoint_id: str) -> None:
        """Drop the checkpoint's loaded model (it was deleted): it answers no request more."""
        for key in list(self._items.keys()):
            if isinstance(key, tuple) and key[0] == checkpoint_id:
                self._items.discard(key)

    def clear(self) -> None:
        self._items.clear()


@lru_cache
def get_predictor_cache() -> PredictorCache:
    """One cache per process, sized by TRANSFERLAB_MODEL_CACHE_SIZE, loading at most
    TRANSFERLAB_MAX_MODEL_LOADS_PER_MINUTE (tests call cache_clear())."""
    settings = get_settings()
    return PredictorCache(settings.model_cache_size, load_rate=LoadRate(settings.max_model_loads_per_minute))
