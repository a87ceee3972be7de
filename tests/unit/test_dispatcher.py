"""The queue's dispatcher with an in-memory claim store and stand-in models (no Ray, no DB)."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from inference import Classification, DetectedPrimitive, Detection, ModelAnswer, ModelRefused
from storage.claims import Claim, ClaimedTask, Completion
from storage.database import utcnow
from taskqueue import Dispatcher, requeue_delay

CUBE = DetectedPrimitive("cube", 0.5, 0.5, 0.2, 0.2, 0.1, 0.9)


@dataclass
class Row:
    image: bytes
    status: str = "queued"
    attempts: int = 0
    token: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class MemoryStore:
    rows: dict[int, Row] = field(default_factory=dict)
    tokens: itertools.count = field(default_factory=itertools.count)
    lost: set[int] = field(default_factory=set)  # leases the store will refuse to renew
    lapsed: set[int] = field(default_factory=set)  # leases past their time, not yet renewed
    writes: list[int] = field(default_factory=list)  # results stored per transaction

    def add(self, *images: bytes) -> list[int]:
        ids = []
        for image in images:
            task_id = len(self.rows) + 1
            self.rows[task_id] = Row(image)
            ids.append(task_id)
        return ids

    def _holds(self, claim: Claim) -> bool:
        row = self.rows.get(claim.task_id)
        return row is not None and row.token == claim.token and row.status == "in progress"

    def claim_tasks(
        self, *, limit: int, lease_seconds: float, running: Collection[int] = ()
    ) -> list[ClaimedTask]:
        token = f"t{next(self.tokens)}"
        out: list[ClaimedTask] = []
        for task_id, row in sorted(self.rows.items()):
            lapsed = row.status == "in progress" and task_id in self.lapsed
            if (row.status == "queued" or (lapsed and task_id not in running)) and len(out) < limit:
                self.lapsed.discard(task_id)
                row.status, row.token = "in progress", token
                row.attempts += 1
                out.append(
                    ClaimedTask(
                        Claim(task_id, token, row.attempts, 1, 3, utcnow() - timedelta(seconds=2)),
                        row.image,
                    )
                )
        return out

    def renew_leases(self, *, claims: list[Claim], lease_seconds: float) -> set[int]:
        held = {c.task_id for c in claims if self._holds(c) and c.task_id not in self.lost}
        self.lapsed -= held
        return held

    def is_settled(self, *, task_id: int) -> bool:
        row = self.rows.get(task_id)
        return row is None or row.status in ("done", "failed", "canceled")

    def waiting_by_model(self) -> dict[int, int]:
        queued = sum(r.status == "queued" for r in self.rows.values())
        return {1: queued, 3: queued} if queued else {}

    def complete(
        self,
        *,
        claim: Claim,
        image_class: str,
        primitives: list[dict[str, Any]],
        details: dict[str, Any],
    ) -> bool:
        if not self._holds(claim):
            return False
        row = self.rows[claim.task_id]
        row.status = "done"
        row.result = {"image_class": image_class, "primitives": primitives, **details}
        return True

    def complete_many(self, *, items: list[Completion]) -> list[bool]:
        self.writes.append(len(items))
        return [
            self.complete(
                claim=i.claim, image_class=i.image_class, primitives=i.primitives, details=i.details
            )
            for i in items
        ]

    def fail(self, *, claim: Claim, error: str) -> bool:
        if not self._holds(claim):
            return False
        self.rows[claim.task_id].status, self.rows[claim.task_id].error = "failed", error
        return True

    def release(self, *, claim: Claim) -> bool:
        if not self._holds(claim):
            return False
        self.rows[claim.task_id].status, self.rows[claim.task_id].token = "queued", None
        return True

    def expire_overdue(self) -> list[Any]:
        return []  # no deadlines here: tests/api/test_queue_policy.py has them

    def purge_events(self, *, moment: Any) -> int:
        return 0

    def fold_usage(self) -> None:
        return None


class StandInModels:
    """Answers by the image's bytes: b"refuse" is refused, b"crash" fails transiently (once per
    ``crashes``), b"slow" waits for ``gate``; everything else is a cube in an office."""

    def __init__(self, crashes: int = 0):
        self.crashes = crashes
        self.gate = asyncio.Event()
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, claim: Claim, image: bytes) -> tuple[ModelAnswer, ModelAnswer]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(0.01)
            if image == b"refuse":
                raise ModelRefused("could not decode the image: bad bytes")
            if image == b"crash" and self.crashes > 0:
                self.crashes -= 1
                raise ConnectionError("replica died")
            if image == b"slow":
                await self.gate.wait()
            return (
                ModelAnswer(Detection((CUBE,)), "YOLO", 1, 5.0),
                ModelAnswer(Classification("office", 0.8, {"office": 0.8}), "model_v1", 1, 2.0),
            )
        finally:
            self.running -= 1


def make_dispatcher(store: MemoryStore, models: StandInModels, **kwargs: Any) -> Dispatcher:
    options: dict[str, Any] = {
        "concurrency": 4,
        "lease_seconds": 30,
        "poll_seconds": 0.05,
        "max_attempts": 3,
        "backoff": lambda _attempts: 0.0,
    }
    options.update(kwargs)
    return Dispatcher(store=store, run_models=models, **options)


async def run_until(
    dispatcher: Dispatcher, store: MemoryStore, settled: int, timeout: float = 5.0
) -> None:
    loop = asyncio.create_task(dispatcher.dispatch_loop())
    try:
        async with asyncio.timeout(timeout):
            while sum(r.status in ("done", "failed") for r in store.rows.values()) < settled:
                await asyncio.sleep(0.01)
    finally:
        loop.cancel()


def test_tasks_run_to_done_with_their_result_and_never_more_than_the_concurrency():
    store, models = MemoryStore(), StandInModels()
    store.add(*[b"img"] * 10)
    dispatcher = make_dispatcher(store, models, concurrency=3)
    asyncio.run(run_until(dispatcher, store, 10))
    assert {r.status for r in store.rows.values()} == {"done"}
    assert models.most_at_once == 3
    result = store.rows[1].result
    assert result is not None
    assert result["image_class"] == "office"
    assert result["primitives"] == [CUBE.as_dict()]
    assert result["detection_model"] == "YOLO" and result["class_probability"] == 0.8
    assert dispatcher.stats.done == 10 and dispatcher.stats.claimed == 10


def test_a_refused_image_fails_its_task_only():
    store, models = MemoryStore(), StandInModels()
    store.add(b"img", b"refuse", b"img")
    dispatcher = make_dispatcher(store, models)
    asyncio.run(run_until(dispatcher, store, 3))
    assert [r.status for r in store.rows.values()] == ["done", "failed", "done"]
    assert store.rows[2].error == "could not decode the image: bad bytes"
    assert dispatcher.stats.failed == 1


def test_a_transient_failure_backs_off_and_the_task_runs_again():
    store, models = MemoryStore(), StandInModels(crashes=2)
    store.add(b"crash")
    waits: list[int] = []

    def backoff(attempts: int) -> float:
        waits.append(attempts)
        return 0.0

    dispatcher = make_dispatcher(store, models, backoff=backoff)
    asyncio.run(run_until(dispatcher, store, 1))
    assert store.rows[1].status == "done"
    assert store.rows[1].attempts == 3
    assert waits == [1, 2]  # backed off once per failed attempt, by attempt number
    assert dispatcher.stats.released == 2


def test_a_task_that_keeps_crashing_fails_after_the_attempt_limit():
    store, models = MemoryStore(), StandInModels(crashes=100)
    store.add(b"crash", b"img")
    dispatcher = make_dispatcher(store, models, max_attempts=2)
    asyncio.run(run_until(dispatcher, store, 2))
    assert store.rows[1].status == "failed"
    assert store.rows[1].error == "gave up after 2 attempts that crashed"
    assert store.rows[2].status == "done"


def test_retry_delay_doubles_up_to_ten_seconds():
    assert [requeue_delay(n) for n in (1, 2, 3, 4, 5, 9)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


async def one_slow_run() -> tuple[MemoryStore, StandInModels, Dispatcher, int]:
    """A dispatcher running one task that waits for ``models.gate``; the task's id."""
    store, models = MemoryStore(), StandInModels()
    (task_id,) = store.add(b"slow")
    dispatcher = make_dispatcher(store, models)
    assert await dispatcher.dispatch_once() == 1
    await asyncio.sleep(0.05)
    return store, models, dispatcher, task_id


async def until_status(store: MemoryStore, task_id: int, status: str) -> None:
    async with asyncio.timeout(2):
        while store.rows[task_id].status != status:
            await asyncio.sleep(0.01)


def test_a_lost_lease_cancels_the_running_task_and_nothing_is_stored():
    async def scenario() -> None:
        store, models, dispatcher, task_id = await one_slow_run()
        store.lost.add(task_id)  # deleted or reclaimed meanwhile
        await dispatcher.renew_once()
        await asyncio.sleep(0.01)
        assert dispatcher.running == {}
        assert dispatcher.stats.discarded == 1
        models.gate.set()
        await asyncio.sleep(0.05)
        assert store.rows[task_id].result is None

    asyncio.run(scenario())


def test_a_run_late_to_renew_its_lease_is_not_claimed_again_by_its_own_dispatcher():
    async def scenario() -> None:
        store, models, dispatcher, task_id = await one_slow_run()
        store.lapsed.add(task_id)  # the process was too busy to renew in time
        assert await dispatcher.dispatch_once() == 0  # its own run: not a second one
        await dispatcher.renew_once()
        assert task_id not in store.lapsed and list(dispatcher.running) == [task_id]
        models.gate.set()
        await until_status(store, task_id, "done")
        assert store.rows[task_id].attempts == 1
        assert dispatcher.stats.claimed == 1 and dispatcher.stats.discarded == 0

    asyncio.run(scenario())


def test_a_run_that_returns_after_its_task_was_claimed_again_leaves_the_new_run_tracked():
    """A released task can be claimed again (the claim ran in another thread) before the
    run that released it has returned: the old run's end must not untrack the new one, whose
    lease would then never be renewed."""

    async def scenario() -> None:
        store, models = MemoryStore(), StandInModels(crashes=1)
        (task_id,) = store.add(b"crash")
        returned = threading.Event()
        release = store.release

        def release_then_wait(*, claim: Claim) -> bool:
            done = release(claim=claim)
            store.rows[task_id].image = b"slow"  # the next run waits for the gate
            returned.wait(timeout=5)
            return done

        store.release = release_then_wait  # type: ignore[method-assign]
        dispatcher = make_dispatcher(store, models)
        assert await dispatcher.dispatch_once() == 1
        await until_status(store, task_id, "queued")
        _, first = dispatcher.running[task_id]
        assert await dispatcher.dispatch_once() == 1  # claimed again: the first run not back
        _, second = dispatcher.running[task_id]
        returned.set()
        async with asyncio.timeout(2):
            await first
        await asyncio.sleep(0)
        assert task_id in dispatcher.running and dispatcher.running[task_id][1] is second
        models.gate.set()
        async with asyncio.timeout(2):
            await second
        assert store.rows[task_id].status == "done" and store.rows[task_id].attempts == 2
        assert dispatcher.running == {}

    asyncio.run(scenario())


def test_paused_queue_claims_nothing_until_resumed_and_long_polls_wake_on_finish():
    async def scenario() -> None:
        store, models = MemoryStore(), StandInModels()
        (task_id,) = store.add(b"slow")
        dispatcher = make_dispatcher(store, models)
        dispatcher.pause()
        assert await dispatcher.dispatch_once() == 0
        dispatcher.resume()
        assert await dispatcher.dispatch_once() == 1
        waiting = asyncio.create_task(dispatcher.wait_finished(task_id, timeout=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        models.gate.set()
        async with asyncio.timeout(1):
            await waiting
        assert store.rows[task_id].status == "done"

    asyncio.run(scenario())


@dataclass
class Recorder:
    """An observer that keeps what it is told."""

    ended_: list[str] = field(default_factory=list)
    stages: list[tuple[str, float]] = field(default_factory=list)
    depths: dict[str, int] = field(default_factory=dict)

    def ended(self, outcome: str) -> None:
        self.ended_.append(outcome)

    def stage(self, stage: str, seconds: float) -> None:
        self.stages.append((stage, seconds))

    def depth(self, model: str, waiting: int) -> None:
        self.depths[model] = waiting


def test_the_observer_hears_outcomes_stages_and_the_backlog_per_model():
    store, models, seen = MemoryStore(), StandInModels(), Recorder()
    store.add(b"img", b"refuse", b"img")
    dispatcher = make_dispatcher(
        store, models, observer=seen, model_names={1: "YOLO", 2: "SSD", 3: "model_v1"}
    )
    assert asyncio.run(dispatcher.report_depth_once()) == {"YOLO": 3, "SSD": 0, "model_v1": 3}
    assert seen.depths == {"YOLO": 3, "SSD": 0, "model_v1": 3}
    asyncio.run(run_until(dispatcher, store, 3))
    assert sorted(seen.ended_) == ["done", "done", "failed"]
    by_stage: dict[str, list[float]] = {}
    for stage, seconds in seen.stages:
        by_stage.setdefault(stage, []).append(seconds)
    assert len(by_stage["wait"]) == 3 and len(by_stage["total"]) == 2
    assert len(by_stage["inference"]) == 2  # the refused run raised before it was timed
    # Accepted two seconds before the claim: the waits and totals say so.
    assert all(1.9 < s < 10 for s in by_stage["wait"] + by_stage["total"])
    assert all(0.005 < s < 5 for s in by_stage["inference"])
    assert asyncio.run(dispatcher.report_depth_once())["YOLO"] == 0


def test_a_wait_that_notifies_wakes_the_dispatcher_and_returns_when_the_task_ends():
    async def scenario() -> None:
        store, models = MemoryStore(), StandInModels()
        dispatcher = make_dispatcher(store, models, poll_seconds=60)
        loop = asyncio.create_task(dispatcher.dispatch_loop())
        try:
            await asyncio.sleep(0.05)  # the loop sleeps for a minute unless woken
            (task_id,) = store.add(b"image")
            async with asyncio.timeout(2):
                await dispatcher.wait_finished(task_id, timeout=30, notify=True)
            assert store.rows[task_id].status == "done"
        finally:
            loop.cancel()

    asyncio.run(scenario())


def test_a_wait_after_the_end_returns_at_once_but_a_released_task_is_waited_for():
    async def scenario() -> None:
        store, models = MemoryStore(), StandInModels(crashes=1)
        done, crashing = store.add(b"image", b"crash")
        dispatcher = make_dispatcher(store, models, backoff=lambda _attempts: 0.0)
        await dispatcher.dispatch_once()
        while dispatcher.running:
            await asyncio.sleep(0.01)
        assert (store.rows[done].status, store.rows[crashing].status) == ("done", "queued")
        store.is_settled = None  # type: ignore[method-assign,assignment]  # a look would raise
        async with asyncio.timeout(1):
            await dispatcher.wait_finished(done, timeout=30)
        # Released after a transient failure: back in the queue, not ended.
        waiting = asyncio.create_task(dispatcher.wait_finished(crashing, timeout=0.3, notify=True))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await waiting

    asyncio.run(scenario())


def test_results_that_finish_together_are_stored_in_one_transaction():
    store, models = MemoryStore(), StandInModels()
    store.add(*[b"img"] * 8)
    dispatcher = make_dispatcher(store, models, concurrency=8)
    asyncio.run(run_until(dispatcher, store, 8))
    assert {r.status for r in store.rows.values()} == {"done"}
    # The eight runs end in the same moment: the first write takes one, the next the rest.
    assert sum(store.writes) == 8 and len(store.writes) <= 2, store.writes


def test_a_wait_answers_the_result_body_of_a_task_this_dispatcher_ended():
    async def scenario() -> None:
        store, models = MemoryStore(), StandInModels()
        done, refused = store.add(b"image", b"refuse")
        dispatcher = make_dispatcher(store, models)
        waiting = asyncio.create_task(dispatcher.wait_finished(done, timeout=5, notify=True))
        await dispatcher.dispatch_once()
        async with asyncio.timeout(2):
            body = await waiting
        assert body is not None
        got = body.as_json()
        assert (got["id"], got["status"]) == (done, "done")
        assert got["result"]["image_class"] == "office"
        assert got["result"]["primitives"] == [CUBE.as_dict()]
        assert "error" not in got
        failed = await dispatcher.wait_finished(refused, timeout=5)
        assert failed is not None
        assert failed.as_json() == {
            "id": refused,
            "status": "failed",
            "result": None,
            "error": "could not decode the image: bad bytes",
        }
        # Canceled or deleted: no body (the caller reads the task).
        dispatcher.cancel(99)
        assert await dispatcher.wait_finished(99, timeout=5) is None

    asyncio.run(scenario())


def test_a_wait_for_a_task_the_caller_read_unsettled_asks_the_store_nothing():
    """The API waits only for tasks it has just stored or read unsettled: the dispatcher does
    not read them again, and their end still wakes the wait."""

    async def scenario() -> None:
        store, models = MemoryStore(), StandInModels()
        (task_id,) = store.add(b"slow")
        asked: list[int] = []
        settled = store.is_settled

        def counting(*, task_id: int) -> bool:
            asked.append(task_id)
            return settled(task_id=task_id)

        store.is_settled = counting  # type: ignore[method-assign]
        dispatcher = make_dispatcher(store, models)
        waiting = asyncio.create_task(dispatcher.wait_finished(task_id, timeout=5, unsettled=True))
        await asyncio.sleep(0.05)
        assert await dispatcher.dispatch_once() == 1
        models.gate.set()
        async with asyncio.timeout(2):
            await waiting
        assert store.rows[task_id].status == "done" and asked == []
        # Without it, a task not running here is looked up (it may have ended elsewhere).
        assert await dispatcher.wait_finished(task_id + 1, timeout=5) is None
        assert asked == [task_id + 1]

    asyncio.run(scenario())


def test_a_wait_at_a_tasks_home_is_answered_whichever_dispatcher_ends_it():
    """Three dispatchers share one store: each task's waits are at its home dispatcher
    (task id modulo three); the one that ends the task tells that one, with the body."""

    async def scenario() -> None:
        store, models = MemoryStore(), StandInModels()
        ids = store.add(*[b"ok"] * 8, b"refuse")
        told: list[tuple[int, int]] = []
        group: list[Dispatcher] = []

        def tell(index: int, ended: list) -> None:
            told.extend((index, task_id) for task_id, _ in ended)
            group[index].ended_elsewhere(ended)

        group.extend(
            make_dispatcher(store, models, concurrency=1, index=i, count=3, tell=tell)
            for i in range(3)
        )
        waits = {
            task_id: asyncio.create_task(
                group[task_id % 3].wait_finished(task_id, timeout=5, unsettled=True)
            )
            for task_id in ids
        }
        # Only the last dispatcher claims: every task it ends whose home is another is told.
        await run_until(group[2], store, settled=len(ids))
        async with asyncio.timeout(2):
            bodies: dict[int, dict[str, Any]] = {}
            for task_id, wait in waits.items():
                body = await wait
                assert body is not None, f"task {task_id}: no body from its home"
                bodies[task_id] = body.as_json()
        assert {b["status"] for i, b in bodies.items() if i != ids[-1]} == {"done"}
        assert bodies[ids[-1]]["error"] == "could not decode the image: bad bytes"
        assert sorted(told) == sorted((i % 3, i) for i in ids if i % 3 != 2)

    asyncio.run(scenario())


def test_a_renewal_racing_a_result_write_neither_cancels_the_run_nor_loses_the_end():
    """Seen in the ceiling bench with two dispatchers: a lease renewal that ran while a
    result was being committed found the claim gone (the task done) and canceled the run
    before it recorded the end, so the task's home dispatcher was never told and a wait
    there ran to its time-out. The writer records the end; the renewal leaves the run."""

    async def scenario() -> None:
        entered, gate = threading.Event(), threading.Event()

        class SlowWrites(MemoryStore):
            def complete_many(self, *, items: list[Completion]) -> list[bool]:
                stored = super().complete_many(items=items)  # committed: status done
                entered.set()
                gate.wait(5)
                return stored

        store, models = SlowWrites(), StandInModels()
        store.add(b"ok", b"ok")  # task 2's home is dispatcher 0
        told: list[tuple[int, list]] = []
        runner = make_dispatcher(
            store, models, index=1, count=2, tell=lambda i, ended: told.append((i, ended))
        )
        runner.recently_ended[1] = None  # only task 2 matters here
        store.rows[1].status = "done"
        assert await runner.dispatch_once() == 1
        await asyncio.to_thread(entered.wait, 5)
        await runner.renew_once()  # the claim is gone: the result is being written
        gate.set()
        async with asyncio.timeout(2):
            while runner.running:
                await asyncio.sleep(0.01)
        assert runner.stats.done == 1 and runner.stats.discarded == 0
        assert [(i, [task for task, _ in ended]) for i, ended in told] == [(0, [2])]
        assert told[0][1][0][1].as_json()["status"] == "done"

    asyncio.run(scenario())
