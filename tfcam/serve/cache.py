"""The explorer's bounded caches (heatmaps, PNGs, decoded images, uploads)."""

from __future__ import annotations

import threading
from collections import OrderedDict


class LRU:
    """A dict that keeps its ``size`` most recently used entries; safe across threads."""

    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)
