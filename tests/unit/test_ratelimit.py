"""The sliding window behind the login and request limits, on a controlled clock."""

from __future__ import annotations

import pytest

from serve_app import ratelimit
from serve_app.ratelimit import SlidingWindow


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    return now


def test_the_limit_holds_within_the_window_and_lifts_as_events_age_out(clock):
    window = SlidingWindow(limit=3, window=60)
    for _ in range(3):
        assert window.retry_after("alice") == 0
        window.hit("alice")
        clock[0] += 10
    assert window.retry_after("alice") == 30  # now 1030; the hit at 1000 ages out at 1060
    assert window.retry_after("bob") == 0  # keys are counted apart
    clock[0] = 1060.0
    assert window.retry_after("alice") == 0
    window.hit("alice")
    assert window.retry_after("alice") == 10  # now the hit at 1010 is the oldest


def test_clear_forgets_a_key(clock):
    window = SlidingWindow(limit=1, window=60)
    window.hit(("1.2.3.4", "first"))
    assert window.retry_after(("1.2.3.4", "first")) == 60
    window.clear(("1.2.3.4", "first"))
    assert window.retry_after(("1.2.3.4", "first")) == 0


def test_a_flood_of_keys_is_bounded(clock):
    window = SlidingWindow(limit=5, window=60, max_keys=100)
    for i in range(150):
        window.hit(i)
    clock[0] += 61
    window.hit("late")  # past max_keys: keys with no recent event are dropped
    assert len(window._events) <= 2


def test_the_shared_estimate_counts_the_previous_windows_events_whole():
    """3 failures just before the window turned still spend a limit of 3 (the estimate
    2.97 let a 4th guess through at every minute's edge)."""
    from serve_app.ratelimit import SharedWindow

    window = SharedWindow(sessions=None, limit=3, prefix="t")  # type: ignore[arg-type]
    assert window.wait_for(current=0, previous=3, elapsed=0.6) >= 1
    assert window.wait_for(current=0, previous=3, elapsed=20.5) == 0  # 3 x 0.66 -> 2 events
    assert window.wait_for(current=2, previous=0, elapsed=59.0) == 0
    assert window.wait_for(current=3, previous=0, elapsed=1.0) >= 1
    wait = window.wait_for(current=1, previous=3, elapsed=5.0)  # needs 3 x share <= 1
    assert window.wait_for(current=1, previous=3, elapsed=5.0 + wait) == 0
