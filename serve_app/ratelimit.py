"""In-process sliding-window limits (each ingress replica keeps its own counts)."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Hashable


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds for each key."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 100_000):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._events: dict[Hashable, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _prune(self, key: Hashable, now: float) -> deque[float]:
        events = self._events[key]
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def retry_after(self, key: Hashable) -> int:
        """Seconds until ``key`` may act again; 0 when it may act now."""
        now = time.monotonic()
        with self._lock:
            events = self._prune(key, now)
            if len(events) < self.limit:
                return 0
            return max(1, math.ceil(events[0] + self.window - now))

    def hit(self, key: Hashable) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._events) > self.max_keys:  # bound memory under a flood of keys
                for stale in [k for k, v in self._events.items() if not v or
                              v[-1] <= now - self.window]:
                    del self._events[stale]
            self._prune(key, now).append(now)

    def clear(self, key: Hashable) -> None:
        with self._lock:
            self._events.pop(key, None)
