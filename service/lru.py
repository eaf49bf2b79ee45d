"""A small thread-safe least-recently-used map: the API's loaded models and its checkpoint lookups."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Any


class LRU:
    """get() refreshes an entry; put() evicts the oldest past `capacity`, calling `on_evict(value)`."""

    def __init__(self, capacity: int, on_evict: Callable[[Any], None] | None = None):
        self.capacity = capacity
        self.on_evict = on_evict
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Hashable, value: Any) -> Any:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            evicted = [self._items.popitem(last=False)[1] for _ in range(len(self._items) - self.capacity)]
        for old in evicted:  # outside the lock: closing may block
            if self.on_evict is not None:
                self.on_evict(old)
        return value

    def discard(self, key: Hashable) -> None:
        """Remove the entry if there is one, calling `on_evict` on it."""
        with self._lock:
            value = self._items.pop(key, None)
        if value is not None and self.on_evict is not None:
            self.on_evict(value)

    def keys(self) -> Iterator[Hashable]:
        with self._lock:
            return iter(list(self._items))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            values = list(self._items.values())
            self._items.clear()
        for value in values:
            if self.on_evict is not None:
                self.on_evict(value)
