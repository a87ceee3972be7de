"""The task queue: a named, detached, self-restarting Ray actor.

The database is the queue. This actor holds nothing that matters: it claims runnable tasks
(atomically, with a lease it keeps renewing), sends each image to its detection and
classification deployments at once, and writes the result or the failure under its claim.
If it dies, Ray restarts it and it claims again whatever is queued or whose lease lapsed,
so an accepted task is never lost and never finishes twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import traceback
from typing import Any

import ray
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError

from config.settings import get_settings
from serve_app.database import make_engine, make_session_factory
from serve_app.tasks import claims
from serve_app.tasks.claims import Claim

log = logging.getLogger(__name__)


class ModelError(Exception):
    """The model ran and refused this input (a permanent failure for the task)."""


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1, max_concurrency=1000)
class TaskQueue:
    def __init__(self, detectors: dict[int, Any], classifiers: dict[int, Any]):
        self.settings = get_settings()
        self.engine = make_engine(self.settings.database_url, pool_size=4)
        self.sessions = make_session_factory(self.engine)
        self.detectors = dict(detectors)
        self.classifiers = dict(classifiers)
        self.running: dict[int, tuple[Claim, asyncio.Task]] = {}
        self.waiters: dict[int, asyncio.Event] = {}
        self.paused = False
        self.wake = asyncio.Event()
        self.stats = {"claimed": 0, "done": 0, "failed": 0, "released": 0, "discarded": 0}
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._dispatch_loop()),
                       loop.create_task(self._lease_loop())]
        log.info("task queue started (concurrency %d, lease %.0fs)",
                 self.settings.queue_concurrency, self.settings.queue_lease_seconds)

    # -- called by the ingress ---------------------------------------------------------------

    def notify(self) -> None:
        """A task was stored: look for work now rather than at the next poll."""
        self.wake.set()

    def configure(self, detectors: dict[int, Any], classifiers: dict[int, Any]) -> None:
        """Point at the current application's deployments (after a redeploy)."""
        self.detectors, self.classifiers = dict(detectors), dict(classifiers)
        self.wake.set()

    def status(self) -> dict[str, Any]:
        return {**self.stats, "running": sorted(self.running), "paused": self.paused}

    async def wait_finished(self, task_id: int, timeout: float) -> None:
        """Return once the task is done, failed or gone, or after ``timeout`` seconds: what
        a long-polling client waits on instead of polling the database."""
        event = self.waiters.setdefault(task_id, asyncio.Event())
        try:
            # Registered first, then checked: a finish in between still sets the event.
            if await self._db(claims.is_settled, task_id=task_id):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=timeout)
        finally:
            if not event.is_set() and self.waiters.get(task_id) is event:
                self.waiters.pop(task_id, None)

    def _settled(self, task_id: int) -> None:
        event = self.waiters.pop(task_id, None)
        if event is not None:
            event.set()

    def ready(self) -> bool:
        return True

    def pause(self) -> None:
        """Stop claiming new tasks (running ones finish); for maintenance and benchmarks."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self.wake.set()

    def pid(self) -> int:
        """The process id (operators and the fault tests kill it to prove nothing is lost)."""
        return os.getpid()

    # -- the loops ---------------------------------------------------------------------------

    async def _db(self, fn, **kwargs):
        def call():
            with self.sessions() as db:
                return fn(db=db, **kwargs)

        return await asyncio.to_thread(call)

    async def _dispatch_loop(self) -> None:
        settings = self.settings
        while True:
            self.wake.clear()  # before looking, so a notify during the claim is not lost
            try:
                free = settings.queue_concurrency - len(self.running)
                if free > 0 and not self.paused:
                    for claim in await self._db(claims.claim_tasks, limit=free,
                                                lease_seconds=settings.queue_lease_seconds):
                        self.stats["claimed"] += 1
                        task = asyncio.create_task(self._run(claim))
                        self.running[claim.task_id] = (claim, task)
                        task.add_done_callback(
                            lambda _t, tid=claim.task_id: self._finished(tid))
                    if free == settings.queue_concurrency - len(self.running):
                        # Nothing was runnable: sleep until told or until the next poll.
                        await self._sleep(settings.queue_poll_seconds)
                else:
                    await self._sleep(settings.queue_poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the database may be restarting: retry
                log.exception("dispatch failed; retrying")
                await asyncio.sleep(1.0)

    def _finished(self, task_id: int) -> None:
        self.running.pop(task_id, None)
        self._settled(task_id)
        self.wake.set()  # a slot is free

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout=seconds)

    async def _lease_loop(self) -> None:
        """Renew the leases of running tasks; cancel those deleted (or reclaimed) meanwhile."""
        interval = self.settings.queue_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            current = [claim for claim, _ in self.running.values()]
            try:
                held = await self._db(claims.renew_leases, claims=current,
                                      lease_seconds=self.settings.queue_lease_seconds)
            except Exception:  # noqa: BLE001
                log.exception("lease renewal failed; retrying")
                continue
            for claim in current:
                entry = self.running.get(claim.task_id)
                if claim.task_id not in held and entry is not None and entry[0] is claim:
                    log.info("task %d was deleted or reclaimed: cancelling", claim.task_id)
                    self.stats["discarded"] += 1
                    entry[1].cancel()

    # -- one task ----------------------------------------------------------------------------

    async def _run(self, claim: Claim) -> None:
        settings = self.settings
        if claim.attempts > settings.queue_max_attempts:
            await self._db(claims.fail, claim=claim,
                           error=f"gave up after {claim.attempts - 1} attempts that crashed")
            self.stats["failed"] += 1
            return
        try:
            image = await self._db(claims.load_input, task_id=claim.task_id)
            if image is None:
                return  # deleted since it was claimed
            started = time.perf_counter()
            detection, classification = await self._infer(claim, image)
            details = {
                "detection_model": detection.get("model"),
                "classification_model": classification.get("model"),
                "class_probability": classification.get("probability"),
                "timings_ms": {"detection": detection.get("inference_ms"),
                               "classification": classification.get("inference_ms"),
                               "total": round((time.perf_counter() - started) * 1000, 2)},
            }
            stored = await self._db(claims.complete, claim=claim,
                                    image_class=classification["image_class"],
                                    primitives=detection["primitives"], details=details)
            self.stats["done" if stored else "discarded"] += 1
        except asyncio.CancelledError:
            raise
        except ModelError as exc:
            await self._db(claims.fail, claim=claim, error=str(exc))
            self.stats["failed"] += 1
        except Exception as exc:  # noqa: BLE001 - a replica died, the DB blinked...: retry
            log.warning("task %d: transient failure, back to the queue: %r", claim.task_id, exc)
            self.stats["released"] += 1
            await asyncio.sleep(min(10.0, 0.5 * 2 ** claim.attempts))
            try:
                await self._db(claims.release, claim=claim)
            except Exception:  # noqa: BLE001 - the lease will lapse and it will be reclaimed
                log.exception("task %d: could not release", claim.task_id)

    async def _infer(self, claim: Claim, image: bytes) -> tuple[dict, dict]:
        detector = self.detectors.get(claim.detection_model_id)
        classifier = self.classifiers.get(claim.classification_model_id)
        if detector is None or classifier is None:
            raise ModelError("the model this task asked for is no longer configured")
        # The bytes go to the object store once and both deployments read them from there.
        ref = ray.put(image)
        try:
            detection, classification = await asyncio.gather(
                detector.detect.remote(ref), classifier.classify.remote(ref))
        except RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            if isinstance(cause, BackPressureError | ray.exceptions.RayActorError):
                raise
            raise ModelError(f"model error: {_short(exc)}") from exc
        for answer in (detection, classification):
            if "error" in answer:
                raise ModelError(answer["error"])
        return detection, classification


def _short(exc: BaseException) -> str:
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip()[:1000] if lines else repr(exc)
