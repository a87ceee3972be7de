"""Calls made together go out as one (taskqueue.coalesce), each caller with its own answer."""

from __future__ import annotations

import asyncio

import pytest

from inference import ModelRefused
from taskqueue.coalesce import Coalesced


class Callee:
    """Answers each item doubled; refuses the item 13 alone; fails whole calls on demand."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.down = False

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.calls.append(items)
        await asyncio.sleep(0.01)
        if self.down:
            raise ConnectionError("replica gone")
        return [ModelRefused("unlucky") if i == 13 else 2 * i for i in items]


def test_items_asked_together_go_in_one_call_each_answer_to_its_caller() -> None:
    async def scenario() -> None:
        callee = Callee()
        coalesced = Coalesced(callee, chunk=8)
        answers = await asyncio.gather(*(coalesced(i) for i in range(5)))
        assert answers == [0, 2, 4, 6, 8]
        assert callee.calls == [[0, 1, 2, 3, 4]]
        assert await coalesced(7) == 14  # alone later: a call of its own
        assert callee.calls[-1] == [7]

    asyncio.run(scenario())


def test_large_groups_are_cut_into_chunks() -> None:
    async def scenario() -> None:
        callee = Callee()
        answers = await asyncio.gather(*(Coalesced(callee, chunk=4)(i) for i in range(1)))
        assert answers == [0]
        coalesced = Coalesced(callee, chunk=4)
        assert await asyncio.gather(*(coalesced(i) for i in range(10))) == [
            2 * i for i in range(10)
        ]
        assert [len(c) for c in callee.calls[1:]] == [4, 4, 2]

    asyncio.run(scenario())


def test_an_item_refused_alone_fails_only_its_caller() -> None:
    async def scenario() -> None:
        coalesced = Coalesced(Callee())
        outcomes = await asyncio.gather(
            *(coalesced(i) for i in (12, 13, 14)), return_exceptions=True
        )
        assert outcomes[0] == 24 and outcomes[2] == 28
        assert isinstance(outcomes[1], ModelRefused) and outcomes[1].reason == "unlucky"

    asyncio.run(scenario())


def test_a_failed_call_fails_every_caller_in_it_and_the_next_call_works() -> None:
    async def scenario() -> None:
        callee = Callee()
        coalesced = Coalesced(callee)
        callee.down = True
        outcomes = await asyncio.gather(*(coalesced(i) for i in range(3)), return_exceptions=True)
        assert all(isinstance(o, ConnectionError) for o in outcomes)
        callee.down = False
        assert await coalesced(4) == 8

    asyncio.run(scenario())


def test_a_canceled_caller_does_not_disturb_the_others() -> None:
    async def scenario() -> None:
        coalesced = Coalesced(Callee())
        first = asyncio.create_task(coalesced(1))
        second = asyncio.create_task(coalesced(2))
        await asyncio.sleep(0)  # both asked, the call under way
        first.cancel()
        assert await asyncio.wait_for(second, 1.0) == 4
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(scenario())


def test_a_chunk_must_hold_an_item() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalesced(Callee(), chunk=0)
