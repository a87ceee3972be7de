"""Calls made together go out together: a task's runs are started together from one claim, and
each asks each model for one answer; ``Coalesced`` sends the items asked for in the same turn
of the event loop as one call with a list (at most ``chunk`` items a call, so that several
replicas still share a large claim), and hands each caller its own answer.

A call that fails as a whole (the replica died, the handle refused) fails every caller of it;
an item the callee refuses alone comes back as an exception instance and fails only its own
caller. A caller canceled meanwhile is skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# items -> one outcome per item, in order: the answer, or an exception to raise for that item.
Send = Callable[[list[T]], Awaitable[list[R | BaseException]]]


class Coalesced(Generic[T, R]):
    def __init__(self, send: Send[T, R], chunk: int = 8):
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.send, self.chunk = send, chunk
        self.calls = 0  # calls sent, for the tests and the benchmark
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def __call__(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((item, answer))
        return await answer

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), self.chunk):
            task = asyncio.create_task(self._call(pending[start : start + self.chunk]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _call(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.calls += 1
        try:
            outcomes = await self.send([item for item, _ in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"{len(outcomes)} answers for {len(group)} items")
        except asyncio.CancelledError:
            for _, answer in group:
                answer.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the whole call failed: so did each item
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (_, answer), outcome in zip(group, outcomes, strict=True):
            if answer.done():  # its caller was canceled
                continue
            if isinstance(outcome, BaseException):
                answer.set_exception(outcome)
            else:
                answer.set_result(outcome)
