"""The task queue's Ray side: a named, detached, self-restarting actor around the Ray-free
dispatcher (taskqueue/), and the models it calls through Serve deployment handles. If the actor
dies, Ray restarts it and the dispatcher claims again whatever is queued or whose lease lapsed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from opentelemetry.trace import SpanKind
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from config.settings import Settings, get_settings
from deployments.dispatchers import Dispatchers, QueueSetup
from inference import ModelAnswer, ModelRefused
from observability import tracing
from storage.claims import Claim, ClaimStore
from storage.database import make_engine, make_session_factory
from storage.results import ResultBody
from taskqueue import Dispatcher, retention_loop
from taskqueue.coalesce import Coalesced
from taskqueue.dispatcher import Ended, short_error

log = logging.getLogger(__name__)


# A canary that failed this many calls in a row stops taking tasks (README "Canary weights").
CANARY_DROP_AFTER = 5


def serve_transport(handles: dict[int, DeploymentHandle]) -> dict[int, DeploymentHandle]:
    """The handles, calling over gRPC when this process runs on Serve's throughput-optimized
    path (config/ray.env). A handle keeps the transport of the process that built the
    application, which need not have that environment (a test's or the benchmark's driver);
    this process has it."""
    from ray.serve._private.constants import RAY_SERVE_USE_GRPC_BY_DEFAULT

    return {
        model_id: handle.options(_by_reference=not RAY_SERVE_USE_GRPC_BY_DEFAULT)
        for model_id, handle in handles.items()
    }


# (model id, "stable" or "canary", "answered" or "failed") -> None: a call counted.
CountCall = Callable[[int, str, str], None]


@dataclass
class Canary:
    """A model's canary weights, as one dispatcher routes to them."""

    handle: Any
    share: float
    calls: int = 0
    failures: int = 0  # in a row
    dropped: bool = False


def takes_canary(task_id: int, share: float) -> bool:
    """Whether the task goes to the canary weights: a fixed spread of task ids (Knuth's
    multiplicative hash), so consecutive ids do not take turns and a retry meets the same
    version."""
    return (task_id * 2654435761 % 2**32) / 2**32 < share


def _refused_for_image(exc: BaseException) -> bool:
    """Whether a replica refused the image itself (any version would)."""
    cause = getattr(exc, "cause", None)
    return isinstance(exc, ModelRefused) or isinstance(cause, ModelRefused)


class ServeModels:
    """``RunModels`` over Serve deployment handles, by model id. The image goes to both models
    as the stored bytes (smaller than any array of it); each replica decodes it at the scale
    its own input needs, so decoding scales with the model replicas, not with the queue.

    With ``coalesce``, the images of runs started together (one claim) go to each model as one
    handle call with a list (``taskqueue.coalesce``) instead of one call each."""

    def __init__(
        self,
        detectors: dict[int, DeploymentHandle],
        classifiers: dict[int, DeploymentHandle],
        coalesce: bool = False,
        *,
        canaries: dict[int, tuple[DeploymentHandle, float]] | None = None,
        count: CountCall | None = None,
    ):
        self.coalesce = coalesce
        self.sent = 0  # handle calls made one per task, and by coalesced models gone
        self.count = count or (lambda model_id, version, outcome: None)
        self.point(detectors, classifiers, canaries)

    def point(
        self,
        detectors: dict[int, DeploymentHandle],
        classifiers: dict[int, DeploymentHandle],
        canaries: dict[int, tuple[DeploymentHandle, float]] | None = None,
    ) -> None:
        """Call these deployments from now on (after a redeploy); ``canaries``: by model id,
        the canary weights' deployment and the share of tasks it takes."""
        self.sent = self.calls
        self.detectors, self.classifiers = serve_transport(detectors), serve_transport(classifiers)
        self._coalesced: dict[tuple[str, int], Coalesced[bytes, ModelAnswer]] = {}
        self.canaries = {
            model_id: Canary(serve_transport({model_id: handle})[model_id], share)
            for model_id, (handle, share) in (canaries or {}).items()
        }

    def canary_status(self) -> dict[int, dict[str, Any]]:
        """Each canary's share, calls, failures in a row and whether it was dropped."""
        return {model_id: vars(c) | {"handle": None} for model_id, c in self.canaries.items()}

    @property
    def calls(self) -> int:
        """Handle calls made to the models so far (the benchmark reports calls per task)."""
        return self.sent + sum(c.calls for c in getattr(self, "_coalesced", {}).values())

    def _call(self, kind: str, model_id: int, handle: DeploymentHandle, image: bytes) -> Any:
        if not self.coalesce:
            self.sent += 1
            return handle.predict.remote(image)
        calls = self._coalesced.get((kind, model_id))
        if calls is None:

            async def send(images: list[bytes]) -> list[ModelAnswer | BaseException]:
                return list(await handle.predict_many.remote(images))

            calls = self._coalesced[(kind, model_id)] = Coalesced(send)
        return calls(image)

    async def _versioned(
        self, kind: str, claim: Claim, model_id: int, stable: DeploymentHandle, image: bytes
    ) -> Any:
        """The model's answer from its canary weights for the canary's share of tasks (chosen
        by task id, so a retried task meets the same version), else from its own. A canary
        call that fails for any reason but the image's own (ImageUnreadable) is answered by
        the model's own weights instead: no task fails for a canary. After
        ``CANARY_DROP_AFTER`` such failures in a row the canary is dropped here (until the
        next deploy)."""
        canary = self.canaries.get(model_id)
        if canary is None or canary.dropped or not takes_canary(claim.task_id, canary.share):
            answer = await self._traced(kind, model_id, stable, image)
            self.count(model_id, "stable", "answered")
            return answer
        try:
            answer = await self._traced(kind, model_id, canary.handle, image)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - judged below; the stable weights answer
            if _refused_for_image(exc):
                raise
            canary.failures += 1
            self.count(model_id, "canary", "failed")
            if canary.failures >= CANARY_DROP_AFTER and not canary.dropped:
                canary.dropped = True
                log.warning(
                    "model %d: canary weights dropped after %d failed calls in a row "
                    "(last: %s); its tasks go to the model's own weights",
                    model_id,
                    canary.failures,
                    short_error(exc),
                )
            answer = await self._traced(kind, model_id, stable, image)
            self.count(model_id, "stable", "answered")
            return answer
        canary.failures = 0
        canary.calls += 1
        self.count(model_id, "canary", "answered")
        return answer

    async def _traced(
        self, kind: str, model_id: int, handle: DeploymentHandle, image: bytes
    ) -> Any:
        """One model call, under a span of its own when traces are on (docs/api.md §E15)."""
        if not tracing.on():
            return await self._call(kind, model_id, handle, image)
        with tracing.span(
            f"{kind} call",
            kind=SpanKind.CLIENT,
            attributes={"model.kind": kind, "model.id": model_id},
        ) as current:
            answer = await self._call(kind, model_id, handle, image)
            if current is not None and isinstance(answer, ModelAnswer):
                current.set_attribute("model.name", answer.model)
                current.set_attribute("model.inference_ms", answer.inference_ms)
            return answer

    async def __call__(self, claim: Claim, image: bytes) -> tuple[ModelAnswer, ModelAnswer]:
        detector = self.detectors.get(claim.detection_model_id)
        classifier = self.classifiers.get(claim.classification_model_id)
        if detector is None or classifier is None:
            raise ModelRefused("the model this task asked for is no longer configured")
        # A replica's ImageUnreadable (a ModelRefused) fails the task with its reason.
        try:
            detection, classification = await asyncio.gather(
                self._versioned("detector", claim, claim.detection_model_id, detector, image),
                self._versioned(
                    "classifier", claim, claim.classification_model_id, classifier, image
                ),
            )
        except ModelRefused:
            raise
        except RayTaskError as exc:
            # ``cause`` is the replica's own exception (Ray may raise a class derived from
            # both RayTaskError and it, whose constructor never ran).
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ModelRefused):
                raise ModelRefused(cause.reason) from exc
            if isinstance(cause, BackPressureError | RayActorError):
                raise
            raise ModelRefused(f"model error: {short_error(cause or exc)}") from exc
        return detection, classification


# The methods called per task (and the backlog, per replica and second) report no task events
# to Ray's GCS: at tens of calls a second, that record-keeping cost the daemons more CPU than
# the calls themselves.
@ray.remote(
    num_cpus=0,
    max_restarts=-1,
    max_task_retries=-1,  # type: ignore[call-overload]
    max_concurrency=1000,
)
class TaskQueue:
    """One dispatcher of the queue: ``index`` of ``setup.count``, each claiming from the
    database."""

    def __init__(self, setup: QueueSetup, index: int = 0):
        from deployments.logs import json_logging
        from deployments.metrics import RayQueueMetrics, version_calls

        json_logging(__name__, "taskqueue", file_name="task_queue.log")
        tracing.configure("primitives-queue")  # OTEL_* set: spans per task (§E15)
        settings: Settings = get_settings()
        engine = make_engine(settings.database_url, pool_size=4)
        reads = make_engine(settings.database_url, pool_size=4, autocommit=True)
        self.models = ServeModels(
            setup.detectors,
            setup.classifiers,
            setup.coalesce,
            canaries=setup.canaries,
            count=version_calls,
        )
        self.dispatcher = Dispatcher(
            store=ClaimStore(make_session_factory(engine), make_session_factory(reads)),
            run_models=self.models,
            concurrency=setup.concurrency,
            lease_seconds=settings.queue_lease_seconds,
            poll_seconds=settings.queue_poll_seconds,
            max_attempts=settings.queue_max_attempts,
            observer=RayQueueMetrics(),
            model_names=dict(setup.model_names),
            index=index,
            count=setup.count,
            tell=self._tell,
        )
        self.peers = Dispatchers(setup.count)
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self.dispatcher.dispatch_loop()),
            loop.create_task(self.dispatcher.lease_loop()),
        ]
        if self.dispatcher.keeps_books:
            self._loops.append(loop.create_task(self.dispatcher.depth_loop()))
            self._loops.append(
                loop.create_task(retention_loop(make_session_factory(engine), settings))
            )
        log.info(
            "task queue dispatcher %d of %d started (concurrency %d, lease %.0fs)",
            index + 1,
            setup.count,
            setup.concurrency,
            settings.queue_lease_seconds,
        )

    def _tell(self, index: int, ended: list[Ended]) -> None:
        """Hand ends to dispatcher ``index`` (their home: their waits are there)."""
        try:
            self.peers.get(index).ended_elsewhere.remote(ended)
        except ValueError:
            log.info("dispatcher %d not found; its waits read the tasks when they time out", index)

    @ray.method(enable_task_events=False)
    def ended_elsewhere(self, ended: list[Ended]) -> None:
        """Another dispatcher ended these tasks, whose home is here."""
        self.dispatcher.ended_elsewhere(ended)

    @ray.method(enable_task_events=False)
    def notify(self) -> None:
        self.dispatcher.notify()

    def configure(self, setup: QueueSetup, index: int = 0) -> None:
        """Point at the current application's deployments and scaling (after a redeploy;
        ``index`` is this dispatcher's, which does not change)."""
        self.models.coalesce = setup.coalesce
        self.models.point(setup.detectors, setup.classifiers, setup.canaries)
        self.dispatcher.concurrency = setup.concurrency
        self.dispatcher.model_names = dict(setup.model_names)
        self.dispatcher.count = setup.count
        self.peers = Dispatchers(setup.count)
        self.dispatcher.notify()

    def status(self) -> dict[str, Any]:
        d = self.dispatcher
        return {
            **vars(d.stats),
            "running": sorted(d.running),
            "paused": d.paused,
            "index": d.index,
            "count": d.count,
            "coalesce": self.models.coalesce,
            "model_calls": self.models.calls,
            "canaries": self.models.canary_status(),
        }

    @ray.method(enable_task_events=False)
    async def wait_finished(
        self, task_id: int, timeout: float, notify: bool = False, unsettled: bool = False
    ) -> ResultBody | None:
        return await self.dispatcher.wait_finished(
            task_id, timeout, notify=notify, unsettled=unsettled
        )

    @ray.method(enable_task_events=False)
    def cancel(self, task_id: int, count: bool = False) -> None:
        self.dispatcher.cancel(task_id, count=count)

    @ray.method(enable_task_events=False)
    def backlog(self, model_name: str) -> int:
        """Tasks queued for this model at the last count (every poll interval)."""
        return self.dispatcher.depths.get(model_name, 0)

    def ready(self) -> bool:
        return True

    def pause(self) -> None:
        """Stop claiming new tasks (running ones finish); for maintenance and benchmarks."""
        self.dispatcher.pause()

    def resume(self) -> None:
        self.dispatcher.resume()

    def pid(self) -> int:
        """The process id (operators and the fault tests kill it to prove nothing is lost)."""
        return os.getpid()
