"""Canary weights (README "Canary weights"): a model id served by two weight versions, each
task going to one by a fixed spread of ids. The real queue (``Dispatcher`` over
``ServeModels``) runs tasks stored through the API on PostgreSQL; stand-in handles answer
as each version's replicas would, naming their weights."""

from __future__ import annotations

import asyncio
from collections import Counter

from deployments.task_queue import CANARY_DROP_AFTER, ServeModels, takes_canary
from inference import Classification, Detection, ModelAnswer
from storage.models import TaskResult
from tests.api.conftest import run_queue_until_done, submit

STABLE, CANARY = "a" * 64, "b" * 64  # the weights' checksums each version answers with


class Handle:
    """A stand-in Serve handle for one weights version; ``fail``: every call raises."""

    def __init__(self, weights: str, *, fail: bool = False) -> None:
        self.weights, self.fail, self.calls = weights, fail, 0
        self.predict = self

    def options(self, **_: object) -> Handle:
        return self

    def remote(self, image: bytes):
        self.calls += 1

        async def answer() -> ModelAnswer:
            await asyncio.sleep(0)
            if self.fail:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return ModelAnswer(Detection(()), "YOLO", 1, 1.0, weights_sha256=self.weights)

        return answer()


CLASSIFIER = Handle("c" * 64)


def models(canary: Handle, share: float, counted: Counter) -> ServeModels:
    classifier_answer = ModelAnswer(Classification("office", 0.9, {"office": 0.9}), "rn", 3, 1.0)

    class Classifier(Handle):
        def remote(self, image: bytes):
            async def answer() -> ModelAnswer:
                return classifier_answer

            return answer()

    return ServeModels(
        {1: Handle(STABLE)},  # type: ignore[dict-item]
        {3: Classifier("c" * 64)},  # type: ignore[dict-item]
        canaries={1: (canary, share)},  # type: ignore[dict-item]
        count=lambda model_id, version, outcome: counted.update([(model_id, version, outcome)]),
    )


def weights_by_task(sessions) -> dict[int, str]:
    with sessions() as db:
        return {
            r.task_id: r.details["detection_weights_sha256"] for r in db.query(TaskResult).all()
        }


def test_the_canary_takes_its_share_and_every_result_names_its_weights(
    client, alice, sample_jpeg, sessions
):
    ids = [submit(client, alice, sample_jpeg) for _ in range(200)]
    canary, counted = Handle(CANARY), Counter[tuple[int, str, str]]()
    dispatcher = run_queue_until_done(sessions, models(canary, 0.2, counted), len(ids))
    assert dispatcher.stats.done == 200 and dispatcher.stats.failed == 0
    made = weights_by_task(sessions)
    assert set(made) == set(ids)
    # Each task went where the spread says, and its result names those weights.
    for task_id in ids:
        assert made[task_id] == (CANARY if takes_canary(task_id, 0.2) else STABLE)
    share = sum(w == CANARY for w in made.values()) / len(made)
    assert abs(share - 0.2) <= 0.05, share  # the stated tolerance: 5 points of 200 tasks
    assert (
        counted[(1, "canary", "answered")]
        == canary.calls
        == len(made) - list(made.values()).count(STABLE)
    )
    assert counted[(1, "stable", "answered")] == 200 - canary.calls


def test_the_spread_of_task_ids_keeps_the_share_over_any_stretch():
    for share in (0.05, 0.2, 0.5):
        for start in (1, 10_000, 1_000_000):
            taken = sum(takes_canary(i, share) for i in range(start, start + 2000))
            assert abs(taken / 2000 - share) <= 0.03, (share, start, taken)


def test_a_canary_that_fails_every_call_is_dropped_and_no_task_is_lost(
    client, alice, sample_jpeg, sessions
):
    ids = [submit(client, alice, sample_jpeg) for _ in range(120)]
    canary, counted = Handle(CANARY, fail=True), Counter[tuple[int, str, str]]()
    run_models = models(canary, 0.5, counted)
    dispatcher = run_queue_until_done(sessions, run_models, len(ids))
    assert dispatcher.stats.done == 120 and dispatcher.stats.failed == 0
    made = weights_by_task(sessions)
    assert set(made) == set(ids) and set(made.values()) == {STABLE}
    assert run_models.canaries[1].dropped
    # Dropped after CANARY_DROP_AFTER failures in a row (a few more already in flight).
    assert CANARY_DROP_AFTER <= canary.calls <= CANARY_DROP_AFTER + 16
    assert counted[(1, "canary", "failed")] == canary.calls
    assert counted[(1, "stable", "answered")] == 120
