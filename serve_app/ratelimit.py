"""Abuse limits: at most N events per key per minute. ``SharedWindow`` counts in the
database, so every ingress replica shares one count (the default); ``SlidingWindow`` counts in
the replica's memory (one replica, or no database round trip per request)."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from storage import limits


class Limiter(Protocol):
    def retry_after(self, key: Hashable) -> int:
        """Seconds until ``key`` may act again; 0 when it may act now."""

    def hit(self, key: Hashable) -> None:
        """Count one event for ``key``."""

    def take(self, key: Hashable) -> int:
        """Count one event if ``key`` may act now (0); else the seconds to wait."""

    def clear(self, key: Hashable) -> None:
        """Forget ``key``'s events."""


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds for each key."""

    def __init__(self, limit: int, window: float = 60.0, max_keys: int = 100_000):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._events: dict[Hashable, deque[float]] = defaultdict(deque)
        self._lock = threading.RLock()

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

    def take(self, key: Hashable) -> int:
        with self._lock:
            wait = self.retry_after(key)
            if not wait:
                self.hit(key)
            return wait

    def clear(self, key: Hashable) -> None:
        with self._lock:
            self._events.pop(key, None)


class SharedWindow:
    """At most ``limit`` events per ``window`` seconds for each key, counted in the database
    (one upsert per event), so every ingress replica, on any node, shares the count. Counts are
    kept per fixed window; the rate is the sliding-window estimate — this window's count plus
    the previous one's weighted by how much of it the sliding window still covers — so it
    does not reset at a window's edge. ``prefix`` keeps different limits' keys apart."""

    def __init__(self, sessions: sessionmaker[Session], limit: int, prefix: str,
                 window: float = 60.0):
        self.sessions, self.limit, self.prefix, self.window = sessions, limit, prefix, window

    def _key(self, key: Hashable) -> str:
        return f"{self.prefix}:{key}"[:200]

    def _wait(self, current: int, previous: int, elapsed: float) -> int:
        """Seconds until the estimate is under the limit (0: it is now)."""
        covered = 1 - elapsed / self.window  # of the previous window, still in the slide
        if previous * covered + current < self.limit:
            return 0
        if current >= self.limit:  # only the next window helps, and its own slide
            left = self.window - elapsed
            return max(1, math.ceil(left + self.window * (1 - (self.limit - 1) / current)))
        # The previous window's share must fall to (limit - current) / previous.
        needed = 1 - (self.limit - current) / previous
        return max(1, math.ceil((needed - elapsed / self.window) * self.window) + 1)

    def _counts(self, key: Hashable, add: bool) -> int:
        now = time.time()
        elapsed = now % self.window
        start = datetime.fromtimestamp(now - elapsed, UTC)
        before = start - timedelta(seconds=self.window)
        with self.sessions() as db:
            name = self._key(key)
            if add:
                current = limits.add(db=db, key=name, window_start=start) - 1
            else:
                current = limits.count(db=db, key=name, window_start=start)
            previous = limits.count(db=db, key=name, window_start=before)
            db.commit()
            if add and random.random() < 0.001:  # now and then, drop windows long gone
                limits.purge_before(db=db, moment=before)
        return self._wait(current, previous, elapsed)

    def retry_after(self, key: Hashable) -> int:
        return self._counts(key, add=False)

    def hit(self, key: Hashable) -> None:
        self._counts(key, add=True)

    def take(self, key: Hashable) -> int:
        """Counts the event whether or not it is allowed (a client that keeps hammering
        keeps itself limited)."""
        return self._counts(key, add=True)

    def clear(self, key: Hashable) -> None:
        with self.sessions() as db:
            limits.clear(db=db, key=self._key(key))
