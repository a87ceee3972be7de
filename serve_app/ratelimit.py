"""Abuse limits: at most N events per key per minute. ``SharedWindow`` counts in the
database, so every ingress replica shares one count (failed logins); ``BatchedWindow`` counts
in the replica's memory and adds its counts to the shared ones in the database a few times a
second (the request rate: no database round trip per request); ``SlidingWindow`` counts in the
replica's memory alone."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from storage import limits

# Under Serve's logger (the ingress replica runs this): its JSON lines and log files.
log = logging.getLogger(f"ray.serve.{__name__}")


class Limiter(Protocol):
    # Whether ``take`` may wait on I/O (then it runs off the event loop).
    blocking: bool

    def retry_after(self, key: Hashable) -> int:
        """Seconds until ``key`` may act again; 0 when it may act now."""

    def hit(self, key: Hashable) -> None:
        """Count one event for ``key``."""

    def take(self, key: Hashable) -> int:
        """Count one event if ``key`` may act now (0); else the seconds to wait."""

    def clear(self, key: Hashable) -> None:
        """Forget ``key``'s events."""

    def give_back(self, key: Hashable) -> None:
        """Take back the latest event counted for ``key`` (it turned out not to count)."""


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds for each key."""

    blocking = False

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
                for stale in [
                    k for k, v in self._events.items() if not v or v[-1] <= now - self.window
                ]:
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

    def give_back(self, key: Hashable) -> None:
        with self._lock:
            events = self._events.get(key)
            if events:
                events.pop()


class SharedWindow:
    """At most ``limit`` events per ``window`` seconds for each key, counted in the database
    (one upsert per event), so every ingress replica, on any node, shares the count. Counts are
    kept per fixed window; the rate is the sliding-window estimate — this window's count plus
    the previous one's weighted by how much of it the sliding window still covers — so it
    does not reset at a window's edge. ``prefix`` keeps different limits' keys apart."""

    blocking = True

    def __init__(
        self,
        sessions: sessionmaker[Session],
        limit: int,
        prefix: str,
        window: float = 60.0,
        clock: Callable[[], float] = time.time,
    ):
        self.sessions, self.limit, self.prefix, self.window = sessions, limit, prefix, window
        self.clock = clock

    def name(self, key: Hashable) -> str:
        """The row's key of ``key`` under this limit."""
        return f"{self.prefix}:{key}"[:200]

    def wait_for(self, current: int, previous: int, elapsed: float) -> int:
        """Seconds until the estimate is under the limit (0: it is now). The previous
        window's share counts as whole events (rounded up): 3 failures a moment before the
        window turned still count as 3 for a limit of 3, not 2.97."""
        covered = 1 - elapsed / self.window  # of the previous window, still in the slide
        if math.ceil(previous * covered - 1e-9) + current < self.limit:
            return 0
        if current >= self.limit:  # only the next window helps, and its own slide
            left = self.window - elapsed
            return max(1, math.ceil(left + self.window * (1 - (self.limit - 1) / current)))
        # The previous window's share must fall to (limit - current - 1) / previous.
        needed = 1 - (self.limit - current - 1) / previous
        return max(1, math.ceil((needed - elapsed / self.window) * self.window) + 1)

    def _counts(self, key: Hashable, add: bool) -> int:
        now = self.clock()
        elapsed = now % self.window
        start = datetime.fromtimestamp(now - elapsed, UTC)
        before = start - timedelta(seconds=self.window)
        with self.sessions() as db:
            name = self.name(key)
            if add:
                current = limits.add(db=db, key=name, window_start=start) - 1
            else:
                current = limits.count(db=db, key=name, window_start=start)
            previous = limits.count(db=db, key=name, window_start=before)
            db.commit()
            if add and random.random() < 0.001:  # now and then, drop windows long gone
                limits.purge_before(db=db, moment=before)
        return self.wait_for(current, previous, elapsed)

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
            limits.clear(db=db, key=self.name(key))

    def give_back(self, key: Hashable) -> None:
        now = self.clock()
        with self.sessions() as db:
            limits.add(
                db=db,
                key=self.name(key),
                count=-1,
                window_start=datetime.fromtimestamp(now - now % self.window, UTC),
            )
            db.commit()


class BatchedWindow:
    """``SharedWindow``'s count (the same rows, the same sliding estimate), kept in this
    replica's memory and written in batches: each ``take`` decides from the counts the
    database held at the last flush plus this replica's events since, and a flusher thread
    adds those events to the database at most every ``flush_seconds`` (one transaction for
    every key) and reads the shared counts back. No request waits on the database.

    What it allows beyond the limit: the events other replicas accepted in their last
    unflushed ``flush_seconds`` (none with one replica). At a steady rate that is (R - 1) x
    a replica's share of one flush; in a burst each of R replicas may take the whole
    remaining limit before it sees the others', so up to R x the limit."""

    blocking = False

    def __init__(
        self,
        sessions: sessionmaker[Session],
        limit: int,
        prefix: str,
        window: float = 60.0,
        flush_seconds: float = 0.25,
        clock: Callable[[], float] = time.time,
    ):
        self.shared = SharedWindow(sessions, limit, prefix, window, clock)
        self.sessions, self.window, self.flush_seconds = sessions, window, flush_seconds
        self.clock = clock
        # Events not yet written, by (key, window start).
        self._pending: dict[tuple[str, float], int] = defaultdict(int)
        # By key: (window start, its count, the previous window's count) at the last flush.
        self._known: dict[str, tuple[float, int, int]] = {}
        self._lock = threading.Lock()
        self._due = threading.Event()
        self._flusher: threading.Thread | None = None

    def _counts(self, name: str, start: float) -> tuple[int, int]:
        """This window's and the previous one's counts as this replica knows them."""
        known_start, current, previous = self._known.get(name, (start, 0, 0))
        if known_start != start:  # the window turned since the last flush
            current, previous = 0, current if known_start == start - self.window else 0
        return current + self._pending.get((name, start), 0), previous + self._pending.get(
            (name, start - self.window), 0
        )

    def _window(self) -> tuple[float, float]:
        now = self.clock()
        elapsed = now % self.window
        return now - elapsed, elapsed

    def retry_after(self, key: Hashable) -> int:
        start, elapsed = self._window()
        with self._lock:
            current, previous = self._counts(self.shared.name(key), start)
        return self.shared.wait_for(current, previous, elapsed)

    def hit(self, key: Hashable) -> None:
        self.take(key)

    def take(self, key: Hashable) -> int:
        """Counts the event whether or not it is allowed, as ``SharedWindow.take`` does."""
        start, elapsed = self._window()
        name = self.shared.name(key)
        with self._lock:
            current, previous = self._counts(name, start)
            self._pending[(name, start)] += 1
            self._start_flusher()
        self._due.set()
        return self.shared.wait_for(current, previous, elapsed)

    def clear(self, key: Hashable) -> None:
        name = self.shared.name(key)
        with self._lock:
            self._known.pop(name, None)
            for pending in [k for k in self._pending if k[0] == name]:
                del self._pending[pending]
        self.shared.clear(key)

    def give_back(self, key: Hashable) -> None:
        start, _ = self._window()
        with self._lock:
            self._pending[(self.shared.name(key), start)] -= 1

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._flusher = threading.Thread(
                target=self._flush_forever, daemon=True, name=f"limits-{self.shared.prefix}"
            )
            self._flusher.start()

    def _flush_forever(self) -> None:
        pause = self.flush_seconds
        while True:
            self._due.wait()  # idle: no wake-ups at rest
            time.sleep(pause)
            self._due.clear()
            try:
                self.flush()
                pause = self.flush_seconds
            except Exception as exc:  # noqa: BLE001 - the database may be restarting
                log.warning("could not write the request counts (%s); retrying", type(exc))
                pause = min(10.0, pause * 2)
                self._due.set()

    def flush(self) -> None:
        """Add the pending events to the database and read the shared counts back."""
        with self._lock:
            batch, self._pending = dict(self._pending), defaultdict(int)
        if not batch:
            return
        try:
            with self.sessions() as db:
                for (name, start), count in batch.items():
                    limits.add(db=db, key=name, window_start=_moment(start), count=count)
                names = {name for name, _ in batch}
                start, _ = self._window()
                counts = limits.counts(
                    db=db, keys=names, window_starts=[_moment(start), _moment(start - self.window)]
                )
                db.commit()
        except Exception:
            with self._lock:  # keep them for the next round, while they still count
                oldest = self._window()[0] - self.window
                for item, count in batch.items():
                    if item[1] >= oldest:
                        self._pending[item] += count
            raise
        with self._lock:
            for name in names:
                self._known[name] = (
                    start,
                    counts.get((name, _moment(start)), 0),
                    counts.get((name, _moment(start - self.window)), 0),
                )


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def make_limiter(
    settings: Settings,
    sessions: sessionmaker[Session],
    per_minute: int,
    name: str,
    *,
    batched: bool = False,
    clock: Callable[[], float] = time.time,
) -> Limiter:
    """A limit of ``per_minute`` events per key, kept where the settings say: in the
    database, shared by every replica (``batched``: counted here and flushed every
    ``limits_flush_seconds``, when that is above 0), or in this replica's memory. ``name``
    keeps its keys apart from other limits'; ``clock``: the wall clock minutes are counted
    by."""
    if settings.limits_storage != "database":
        return SlidingWindow(per_minute)
    if batched and settings.limits_flush_seconds > 0:
        return BatchedWindow(
            sessions,
            per_minute,
            name,
            flush_seconds=settings.limits_flush_seconds,
            clock=clock,
        )
    return SharedWindow(sessions, per_minute, name, clock=clock)
