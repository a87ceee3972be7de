"""The dispatcher: the task queue's logic, with no Ray in it.

The database is the queue. The dispatcher holds nothing that matters: it claims runnable
tasks (atomically, with a lease it keeps renewing), sends each image to its detection and
classification models at once, and writes the result or the failure under its claim. Whoever
runs it (the ``TaskQueue`` actor in deployments/task_queue.py) may die at any moment: a new
one claims again whatever is queued or whose lease lapsed, so an accepted task is never lost
and never finishes twice. It takes a claim store (``storage.claims.ClaimStore``) and a
``run_models`` coroutine, so its loops are tested with stand-ins.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from opentelemetry.trace import SpanKind

from inference import Classification, Detection, ModelAnswer, ModelRefused
from observability import tracing
from storage.claims import Claim, ClaimedTask, Completion, Expired
from storage.database import as_utc, utcnow
from storage.results import ResultBody

log = logging.getLogger(__name__)

# Tasks ended here that are remembered, with their result bodies, for a wait that arrives
# after the end (it answers at once, without a look in the database).
RECENTLY_ENDED = 4096
# Events are kept this long (docs/api.md §E11: a reconnect within it resumes exactly), and
# purged this often.
EVENTS_KEPT = timedelta(minutes=10, seconds=30)
EVENTS_PURGE_EVERY_S = 60.0


class Store(Protocol):
    """The claim operations the dispatcher needs: ``storage.claims.ClaimStore``, or a store
    in memory in the unit tests."""

    def claim_tasks(
        self, *, limit: int, lease_seconds: float, running: Collection[int] = ()
    ) -> list[ClaimedTask]: ...
    def renew_leases(self, *, claims: list[Claim], lease_seconds: float) -> set[int]: ...
    def is_settled(self, *, task_id: int) -> bool: ...
    def waiting_by_model(self) -> dict[int, int]: ...
    def complete_many(self, *, items: list[Completion]) -> list[bool]: ...
    def fail(self, *, claim: Claim, error: str) -> bool: ...
    def release(self, *, claim: Claim) -> bool: ...
    def expire_overdue(self) -> list[Expired]: ...
    def purge_events(self, *, moment: datetime) -> int: ...
    def fold_usage(self) -> None: ...


class QueueObserver(Protocol):
    """Where the dispatcher reports what it sees (Ray metrics in the actor)."""

    def ended(self, outcome: str) -> None: ...
    def stage(self, stage: str, seconds: float) -> None: ...
    def depth(self, model: str, waiting: int) -> None: ...


class NoObserver:
    def ended(self, outcome: str) -> None:
        return None

    def stage(self, stage: str, seconds: float) -> None:
        return None

    def depth(self, model: str, waiting: int) -> None:
        return None


def _seconds_since(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (utcnow() - as_utc(moment)).total_seconds()


# (claim, image bytes) -> (detection answer, classification answer). Raises ModelRefused for
# a permanent failure; anything else is transient and the task goes back to the queue.
RunModels = Callable[[Claim, bytes], Awaitable[tuple[ModelAnswer, ModelAnswer]]]

# A task that ended, with its result route's body when known (None: read the task).
Ended = tuple[int, ResultBody | None]
# (dispatcher index, ends) -> None: hand ends to another dispatcher (fire and forget).
Tell = Callable[[int, list[Ended]], None]


def home_of(task_id: int, count: int) -> int:
    """The dispatcher (of ``count``) where waits for the task are registered: whichever
    dispatcher ends the task tells that one."""
    return task_id % count


def requeue_delay(attempts: int) -> float:
    """Seconds to wait before giving a transiently failed task back: 1, 2, 4 ... 10."""
    return min(10.0, 0.5 * 2**attempts)


@dataclass
class QueueStats:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    released: int = 0
    discarded: int = 0


@dataclass
class Dispatcher:
    store: Store
    run_models: RunModels
    concurrency: int
    lease_seconds: float
    poll_seconds: float
    max_attempts: int
    backoff: Callable[[int], float] = requeue_delay
    stats: QueueStats = field(default_factory=QueueStats)
    observer: QueueObserver = field(default_factory=NoObserver)
    # Model names by id: the backlog is reported per model name.
    model_names: dict[int, str] = field(default_factory=dict)
    paused: bool = False
    # Which of the queue's dispatchers this is, of how many, and how to tell another one
    # that a task ended (waits for a task are registered at its home, ``home_of``). Every
    # dispatcher claims; the first (index 0) also keeps the books: the backlog it reports,
    # deadlines, the event purge.
    index: int = 0
    count: int = 1
    tell: Tell | None = None

    def __post_init__(self) -> None:
        self.depths: dict[str, int] = {}  # the last backlog count, by model name
        self.running: dict[int, tuple[Claim, asyncio.Task[None]]] = {}
        self.waiters: dict[int, asyncio.Event] = {}
        # Tasks that ended here (oldest first), with their result route's body when known: a
        # wait that comes after the end returns at once, without a look in the database.
        self.recently_ended: dict[int, ResultBody | None] = {}
        self.wake = asyncio.Event()
        # Results waiting to be stored: whatever finishes while one write is under way goes
        # in the next, in one transaction (a commit for many tasks under load).
        self._completions: list[tuple[Completion, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        # Ends of tasks whose home is another dispatcher, sent together once per loop turn.
        self._outbox: dict[int, list[Ended]] = {}
        # Tasks whose result is being written: a renewal that finds their claim gone (the
        # write committed first) must not cancel their run.
        self._storing: set[int] = set()

    @property
    def keeps_books(self) -> bool:
        """Whether this dispatcher reports the backlog, ends overdue tasks and purges events
        (one of them does: the first)."""
        return self.index == 0

    # -- control ------------------------------------------------------------------------------

    def notify(self) -> None:
        """A task was stored: look for work now rather than at the next poll."""
        self.wake.set()

    def pause(self) -> None:
        """Stop claiming new tasks (running ones finish)."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.wake.set()

    def _ended(
        self,
        task_id: int,
        body: ResultBody | None = None,
        *,
        outcome: str | None = None,
        tell: bool = True,
    ) -> None:
        """The task is settled for good (done, failed, canceled or deleted): the one place
        that counts its ``outcome`` (when this dispatcher is the one to count it), remembers
        its ``body`` (its result route's body, as stored) and wakes its waits here. With
        ``tell``, its home dispatcher hears of it when that is another one."""
        if outcome is not None:
            self.observer.ended(outcome)
        self.recently_ended[task_id] = body
        if len(self.recently_ended) > RECENTLY_ENDED:
            del self.recently_ended[next(iter(self.recently_ended))]
        home = home_of(task_id, self.count)
        if tell and home != self.index and self.tell is not None:
            if not self._outbox:
                asyncio.get_running_loop().call_soon(self._send_outbox)
            self._outbox.setdefault(home, []).append((task_id, body))
        self._wake_waits(task_id)

    def _send_outbox(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for home, ended in outbox.items():
            try:
                if self.tell is not None:
                    self.tell(home, ended)
            except Exception:  # noqa: BLE001 - a wait there reads the task when it times out
                log.warning("could not tell dispatcher %d that %d tasks ended", home, len(ended))

    def ended_elsewhere(self, ended: list[Ended]) -> None:
        """Another dispatcher ended these tasks, whose home this is: answer their waits."""
        for task_id, body in ended:
            self._ended(task_id, body, tell=False)

    def _wake_waits(self, task_id: int) -> None:
        """Answer the waits for a task: it ended, or its run here did."""
        event = self.waiters.pop(task_id, None)
        if event is not None:
            event.set()

    def cancel(self, task_id: int, *, count: bool = False) -> None:
        """The task was canceled or deleted: stop its run now (its claim could not write
        anyway) and wake whoever waits for it. Every dispatcher is told (any may run it);
        ``count``: this one counts the cancel among the outcomes (its home, for a cancel)."""
        self._ended(task_id, outcome="canceled" if count else None, tell=False)
        entry = self.running.get(task_id)
        if entry is not None:
            self.stats.discarded += 1
            entry[1].cancel()

    async def wait_finished(
        self, task_id: int, timeout: float, *, notify: bool = False, unsettled: bool = False
    ) -> ResultBody | None:
        """Return once the task is done, failed, canceled or gone, or after ``timeout``
        seconds: the result route's body when this dispatcher ended the task (done or
        failed), else None (read the task). ``notify``: the task was just stored; look for
        work now as well. ``unsettled``: the caller read the task unsettled just now, so no
        look in the database is needed (a task ended since then was ended here, or by a
        cancel or delete that tells this dispatcher; only one ended by a previous
        incarnation of this process in that instant is waited for until ``timeout``)."""
        if notify:
            self.notify()
        if task_id in self.recently_ended:
            return self.recently_ended[task_id]
        event = self.waiters.setdefault(task_id, asyncio.Event())
        try:
            # Registered first, then checked: a finish in between still sets the event. A
            # task this dispatcher runs, or one just stored and not yet claimed, needs no
            # look in the database: its end here sets the event. Anything else might have
            # ended before this process started, so the database answers for it.
            if (
                task_id not in self.running
                and not (notify or unsettled)
                and await self._db(self.store.is_settled, task_id=task_id)
            ):
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=timeout)
            return self.recently_ended.get(task_id)
        finally:
            if not event.is_set() and self.waiters.get(task_id) is event:
                self.waiters.pop(task_id, None)

    # -- the loops ----------------------------------------------------------------------------

    async def _db(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, **kwargs)

    async def dispatch_once(self) -> int:
        """Claim what fits in the free slots and start it; the number started."""
        free = self.concurrency - len(self.running)
        if free <= 0 or self.paused:
            return 0
        claimed = await self._db(
            self.store.claim_tasks,
            limit=free,
            lease_seconds=self.lease_seconds,
            running=list(self.running),
        )
        for item in claimed:
            claim = item.claim
            self.stats.claimed += 1
            self.recently_ended.pop(claim.task_id, None)  # claimed again: not settled
            task = asyncio.create_task(self.run(claim, item.image))
            self.running[claim.task_id] = (claim, task)
            task.add_done_callback(functools.partial(self._finished, claim.task_id))
        return len(claimed)

    async def dispatch_loop(self) -> None:
        while True:
            self.wake.clear()  # before looking, so a notify during the claim is not lost
            try:
                if not await self.dispatch_once():
                    # Nothing runnable or no free slot: sleep until told or the next poll.
                    await self._sleep(self.poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be restarting: retry
                log.exception("dispatch failed; retrying")
                await asyncio.sleep(1.0)

    def _finished(self, task_id: int, task: asyncio.Task[None]) -> None:
        entry = self.running.get(task_id)
        if entry is not None and entry[1] is not task:
            return  # a run of a task released and claimed again since: the newer run ends it
        self.running.pop(task_id, None)
        self._wake_waits(task_id)
        self.wake.set()  # a slot is free

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)

    async def renew_once(self) -> None:
        """Renew the leases of running tasks; cancel those deleted (or reclaimed) meanwhile."""
        current = [claim for claim, _ in self.running.values()]
        held = await self._db(
            self.store.renew_leases, claims=current, lease_seconds=self.lease_seconds
        )
        for claim in current:
            entry = self.running.get(claim.task_id)
            if (
                claim.task_id not in held
                and entry is not None
                and entry[0] is claim
                and claim.task_id not in self._storing
                and claim.task_id not in self.recently_ended
            ):
                log.info(
                    "task %d was canceled, deleted or reclaimed: abandoning its run",
                    claim.task_id,
                    extra=claim.log_extra(),
                )
                self.stats.discarded += 1
                entry[1].cancel()

    async def report_depth_once(self) -> dict[str, int]:
        """Report how many tasks wait for each known model (0 for none); returns it."""
        waiting = await self._db(self.store.waiting_by_model)
        depths = {name: waiting.get(model_id, 0) for model_id, name in self.model_names.items()}
        for name, count in depths.items():
            self.observer.depth(name, count)
        self.depths = depths
        return depths

    async def expire_once(self) -> int:
        """End the queued tasks past their deadline (failed; whoever waits for them is
        answered); how many."""
        ended = await self._db(self.store.expire_overdue)
        for task in ended:
            self._ended(task.task_id, task.body, outcome="failed")
            log.info(
                "task %d not started within its deadline of %s s",
                task.task_id,
                task.deadline_s,
                extra={"task": task.task_id, "user": task.user_id, "outcome": "failed"},
            )
        return len(ended)

    async def depth_loop(self) -> None:
        """Every poll: report the backlog and end the tasks past their deadline; every
        minute, purge the events older than the window a reconnect may resume in and fold
        the users' counters (``storage.events.fold``). The
        dispatcher that keeps the books runs it."""
        purged_at = 0.0
        while True:
            try:
                await self.report_depth_once()
                await self.expire_once()
                if time.monotonic() - purged_at > EVENTS_PURGE_EVERY_S:
                    await self._db(self.store.purge_events, moment=utcnow() - EVENTS_KEPT)
                    await self._db(self.store.fold_usage)
                    purged_at = time.monotonic()
            except Exception:  # noqa: BLE001 - the database may be restarting
                log.warning("could not count the backlog or end overdue tasks; retrying")
            await asyncio.sleep(self.poll_seconds)

    async def lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.renew_once()
            except Exception:  # noqa: BLE001
                log.exception("lease renewal failed; retrying")

    async def _store(self, completion: Completion) -> bool:
        """Store a result under its claim (with others that finish meanwhile); whether the
        claim still held."""
        stored = asyncio.get_running_loop().create_future()
        self._completions.append((completion, stored))
        self._storing.add(completion.claim.task_id)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_results())
        return await stored

    async def _write_results(self) -> None:
        while self._completions:
            batch, self._completions = self._completions, []
            try:
                outcomes = await self._db(
                    self.store.complete_many, items=[item for item, _ in batch]
                )
            except Exception as exc:  # noqa: BLE001 - each run handles it as transient
                for item, future in batch:
                    self._storing.discard(item.claim.task_id)
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (item, future), outcome in zip(batch, outcomes, strict=True):
                # The end is recorded (and its home told) here, not by the run: a run
                # canceled while its result was being written must not lose it.
                if outcome:
                    self._ended(item.claim.task_id, item.body(), outcome="done")
                self._storing.discard(item.claim.task_id)
                if not future.done():  # a run canceled meanwhile no longer waits
                    future.set_result(outcome)

    # -- one task -----------------------------------------------------------------------------

    async def run(self, claim: Claim, image: bytes | None) -> None:
        """Run one claimed task (its image read with the claim) to done, failed or back to
        the queue; with traces on, under a span continuing the trace that stored it."""
        if not tracing.on():
            await self._run(claim, image)
            return
        with tracing.span(
            "run task",
            parent=claim.traceparent,
            kind=SpanKind.CONSUMER,
            attributes={"task.id": claim.task_id, "task.attempt": claim.attempts},
        ):
            # The claim: from the task's acceptance to this run taking it.
            accepted = as_utc(claim.created_at) if claim.created_at is not None else None
            with tracing.span(
                "claim",
                start_time_ns=int(accepted.timestamp() * 1e9) if accepted else None,
                attributes={"task.id": claim.task_id},
            ):
                pass
            await self._run(claim, image)

    async def _run(self, claim: Claim, image: bytes | None) -> None:
        """The run's steps: give up on a task that crashed too often; infer; store the
        result. A permanent refusal fails the task, anything else gives it back."""
        if claim.attempts > self.max_attempts:
            await self._fail(claim, f"gave up after {claim.attempts - 1} attempts that crashed")
            return
        waited = _seconds_since(claim.created_at)
        if waited is not None and claim.attempts == 1:
            self.observer.stage("wait", waited)
        if image is None:
            return  # deleted since it was claimed
        try:
            completion, timings = await self._infer(claim, image)
            await self._complete(completion, timings)
        except asyncio.CancelledError:
            raise
        except ModelRefused as exc:
            await self._fail(claim, exc.reason)
        except Exception as exc:  # noqa: BLE001 - a replica died, the DB blinked...: retry
            await self._give_back(claim, exc)

    async def _infer(self, claim: Claim, image: bytes) -> tuple[Completion, dict[str, float]]:
        """Both models' answers for the image, as the result to store and its timings."""
        started = time.perf_counter()
        detection, classification = await self.run_models(claim, image)
        self.observer.stage("inference", time.perf_counter() - started)
        if not isinstance(detection.prediction, Detection) or not isinstance(
            classification.prediction, Classification
        ):
            raise ModelRefused("the configured models answered with the wrong kinds")
        timings = {
            "detection": detection.inference_ms,
            "classification": classification.inference_ms,
            "total": round((time.perf_counter() - started) * 1000, 2),
        }
        details = {
            "detection_model": detection.model,
            "classification_model": classification.model,
            "detection_weights_sha256": detection.weights_sha256,
            "classification_weights_sha256": classification.weights_sha256,
            "class_probability": classification.prediction.probability,
            "class_probabilities": classification.prediction.probabilities,
            "timings_ms": timings,
        }
        completion = Completion(
            claim,
            image_class=classification.prediction.image_class,
            primitives=[p.as_dict() for p in detection.prediction.primitives],
            details=details,
        )
        return completion, timings

    async def _complete(self, completion: Completion, timings: dict[str, float]) -> None:
        """Store the result under the claim (the writer records the end: _write_results)."""
        claim = completion.claim
        with tracing.span("store result", attributes={"task.id": claim.task_id}):
            stored = await self._store(completion)
        if not stored:
            self.stats.discarded += 1
            return
        self.stats.done += 1
        log.info(
            "task %d done in %.0f ms",
            claim.task_id,
            timings["total"],
            extra={**claim.log_extra(), "outcome": "done", "timings_ms": timings},
        )
        total = _seconds_since(claim.created_at)
        if total is not None:
            self.observer.stage("total", total)

    async def _fail(self, claim: Claim, error: str) -> None:
        """End the task failed with ``error``, if the claim still holds."""
        if await self._db(self.store.fail, claim=claim, error=error):
            self._ended(claim.task_id, claim.failed(error), outcome="failed")
            log.info(
                "task %d failed: %s",
                claim.task_id,
                error,
                extra={**claim.log_extra(), "outcome": "failed"},
            )
        self.stats.failed += 1

    async def _give_back(self, claim: Claim, exc: Exception) -> None:
        """A transient failure: the task goes back to the queue after a pause."""
        log.warning(
            "task %d: transient failure, back to the queue: %r",
            claim.task_id,
            exc,
            extra=claim.log_extra(),
        )
        self.stats.released += 1
        await asyncio.sleep(self.backoff(claim.attempts))
        try:
            await self._db(self.store.release, claim=claim)
        except Exception:  # noqa: BLE001 - the lease will lapse and it will be reclaimed
            log.exception("task %d: could not release", claim.task_id, extra=claim.log_extra())


def short_error(exc: BaseException) -> str:
    """The last line of an exception's report, as a task's error (at most 1000 characters)."""
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip()[:1000] if lines else repr(exc)
