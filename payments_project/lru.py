"""A small thread-safe LRU whose entries each end at their own deadline: what verified credentials
(client JWTs, service certificates) are remembered in, per process."""

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class ExpiringLRU(Generic[V]):
    """key -> (value, deadline in epoch seconds); at most `size` entries, least recently used out first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[V, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.time() >= entry[1]:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, value: V, deadline: float) -> None:
        if self.size <= 0 or time.time() >= deadline:
            return
        with self._lock:
            self._entries[key] = (value, deadline)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
