"""A small LRU cache of loaded checkpoints, shared by the request threads.

A checkpoint is loaded once (sha256 checked against the database's copy, safetensors only) and
then answers every /predict for it until it is evicted. Two requests for the same uncached
checkpoint load it once; requests for other checkpoints are not held up by that load.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.config import get_settings

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
    return ServedModel(predictor, MicroBatcher(predictor.forward))


class PredictorCache:
    def __init__(self, capacity: int, loader: Loader = _load):
        self.capacity = capacity
        self._loader = loader
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()  # guards _items and _loading
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get(self, checkpoint_id: str, directory: Path, sha256: str) -> Any:
        """The loaded model (a ServedModel by default); CheckpointError when the file fails its check."""
        key = (checkpoint_id, sha256)  # a re-recorded sha256 is a different checkpoint
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:  # another thread may have loaded it while we waited
                if key in self._items:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return self._items[key]
            try:
                predictor = self._loader(directory, sha256)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self._loading.pop(key, None)
                self.misses += 1
                self._items[key] = predictor
                while len(self._items) > self.capacity:
                    _, evicted = self._items.popitem(last=False)
                    if hasattr(evicted, "close"):
                        evicted.close()
            return predictor

    def __contains__(self, checkpoint_id: str) -> bool:
        with self._lock:
            return any(key[0] == checkpoint_id for key in self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            for item in self._items.values():
                if hasattr(item, "close"):
                    item.close()
            self._items.clear()


@lru_cache
def get_predictor_cache() -> PredictorCache:
    """One cache per process, sized by TRANSFERLAB_MODEL_CACHE_SIZE (tests call cache_clear())."""
    return PredictorCache(get_settings().model_cache_size)
