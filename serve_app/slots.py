"""How many things one user may have under way at once in this replica: long polls, event
streams, image fetches (``UserSlots``) and pictures being drawn (``DrawingSlots``, with a cap
for the whole replica). Counted on the event loop's thread: no lock."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager


class UserSlots:
    """At most ``per_user`` things at once for each user in this replica (the event loop's
    thread only: no lock). ``slot`` yields whether this one got a place."""

    def __init__(self, per_user: int):
        self.per_user = per_user
        self._taken: Counter[int] = Counter()

    def take(self, user_id: int) -> bool:
        """Take a place for the user if one is free (give it back with ``give``)."""
        if self._taken[user_id] >= self.per_user:
            return False
        self._taken[user_id] += 1
        return True

    def give(self, user_id: int) -> None:
        self._taken[user_id] -= 1
        if not self._taken[user_id]:
            del self._taken[user_id]

    @contextmanager
    def slot(self, user_id: int) -> Iterator[bool]:
        if not self.take(user_id):
            yield False
            return
        try:
            yield True
        finally:
            self.give(user_id)


class Busy(Exception):
    """The user already has as many pictures being drawn as allowed."""


class DrawingSlots:
    """Drawing decodes and encodes the whole input (up to the pixel limit, 120 MB of RGB at
    40 MP): at most ``per_user`` at once for one user (Busy beyond) and ``total`` at once in
    this replica (the rest wait their turn)."""

    def __init__(self, *, per_user: int = 2, total: int = 4):
        self._users = UserSlots(per_user)
        self._total = asyncio.Semaphore(total)

    @asynccontextmanager
    async def slot(self, user_id: int) -> AsyncIterator[None]:
        with self._users.slot(user_id) as granted:
            if not granted:
                raise Busy
            async with self._total:
                yield
