"""Task events through PostgreSQL's LISTEN/NOTIFY: a stored task wakes the queue, a settled
task wakes the long polls waiting for it, on every node, with no Ray call in between.

Triggers send the notifications (migration 0002) inside the transactions that store the
change, so PostgreSQL delivers them exactly when the change is visible, whoever wrote it. A
listener that loses its connection reconnects and reports it (``on_reconnect``), so that
whoever waits can look at the database again: a notification sent while it was away is lost,
the state in the database is not.
"""

from __future__ import annotations

import logging
import select
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

# Insert, or back to queued after a transient failure. The names are migration 0002's.
TASKS_QUEUED = "primitives_tasks_queued"
TASK_SETTLED = "primitives_task_settled"  # done, failed or deleted; payload: the task id


def supported(url: str) -> bool:
    """Whether the database delivers events (PostgreSQL does; SQLite does not)."""
    return make_url(url).get_backend_name() == "postgresql"


class Listener:
    """A thread holding one connection that LISTENs on ``channels`` and calls
    ``on_event(channel, payload)`` for each notification (from the thread: hand it over to an
    event loop with ``call_soon_threadsafe``)."""

    def __init__(self, url: str, channels: list[str], on_event: Callable[[str, str], Any],
                 on_reconnect: Callable[[], Any] = lambda: None):
        self.dsn = make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        self.channels, self.on_event, self.on_reconnect = channels, on_event, on_reconnect
        self._stop = threading.Event()
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-events", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg2  # type: ignore[import-untyped]

        delay = 0.5
        while not self._stop.is_set():
            try:
                conn = psycopg2.connect(self.dsn)
            except psycopg2.Error as exc:
                log.warning("task events: cannot connect (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                delay = min(10.0, delay * 2)
                continue
            try:
                conn.autocommit = True
                with conn.cursor() as cursor:
                    for channel in self.channels:
                        cursor.execute(f'LISTEN "{channel}"')
                delay = 0.5
                self.connected.set()
                self.on_reconnect()
                while not self._stop.is_set():
                    if select.select([conn], [], [], 1.0)[0]:
                        conn.poll()
                        while conn.notifies:
                            note = conn.notifies.pop(0)
                            self.on_event(note.channel, note.payload)
            except Exception:  # noqa: BLE001 - PostgreSQL restarting: reconnect
                log.warning("task events: connection lost; reconnecting", exc_info=True)
            finally:
                self.connected.clear()
                conn.close()
