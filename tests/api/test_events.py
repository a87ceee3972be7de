"""Task events through PostgreSQL: what the queue and the long polls wake on."""

from __future__ import annotations

import queue
import threading

from storage import claims, events
from storage.events import Listener


def test_storing_and_settling_tasks_notify_listeners_on_commit(database_url, sessions,
                                                               client, alice, sample_jpeg):
    heard: queue.Queue[tuple[str, str]] = queue.Queue()
    reconnected = threading.Event()
    listener = Listener(database_url, [events.TASKS_QUEUED, events.TASK_SETTLED],
                        on_event=lambda channel, payload: heard.put((channel, payload)),
                        on_reconnect=reconnected.set).start()
    try:
        assert reconnected.wait(10) and listener.connected.is_set()
        task_id = client.post("/api/tasks", content=sample_jpeg,
                              headers={**alice, "Content-Type": "image/jpeg"}).json()["id"]
        assert heard.get(timeout=5) == (events.TASKS_QUEUED, "")
        with sessions() as db:
            (claim,) = claims.claim_tasks(db=db, limit=1, lease_seconds=30)
            assert heard.empty()  # claiming is not news to anyone
            assert claims.complete(db=db, claim=claim, image_class="office", primitives=[],
                                   details={})
        assert heard.get(timeout=5) == (events.TASK_SETTLED, str(task_id))
        client.delete(f"/api/tasks/{task_id}", headers=alice)
        assert heard.get(timeout=5) == (events.TASK_SETTLED, str(task_id))
        other = client.post("/api/tasks", content=sample_jpeg,
                            headers={**alice, "Content-Type": "image/jpeg"}).json()["id"]
        assert heard.get(timeout=5) == (events.TASKS_QUEUED, "")
        with sessions() as db:
            (claim,) = claims.claim_tasks(db=db, limit=1, lease_seconds=30)
            assert claims.release(db=db, claim=claim)
            assert heard.get(timeout=5) == (events.TASKS_QUEUED, "")  # back in the queue
            (claim,) = claims.claim_tasks(db=db, limit=1, lease_seconds=30)
            assert claims.fail(db=db, claim=claim, error="model error")
        assert heard.get(timeout=5) == (events.TASK_SETTLED, str(other))
        assert heard.empty()
    finally:
        listener.stop()
    assert not listener.connected.is_set()


def test_events_are_postgresql_only():
    assert events.supported("postgresql+psycopg2://u:p@h/db")
    assert not events.supported("sqlite:///var/x.db")
