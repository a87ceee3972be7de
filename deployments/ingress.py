"""The HTTP ingress: the FastAPI app, hosted by Ray Serve, plus the link to the task queue."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray import serve
from ray.actor import ActorHandle
from ray.serve.handle import DeploymentHandle

from config.registry import ModelSpec, Registry
from config.settings import Settings, get_settings
from deployments import metrics
from serve_app.main import create_app
from storage.database import make_engine, make_session_factory

log = logging.getLogger("ray.serve")

SUPERVISE_SECONDS = 5.0
# The queue and the webhook sender run on the head node, as Serve's controller does: a worker
# node that held one could never be removed by the cluster autoscaler (they live forever).
ON_HEAD = {"node:__internal_head__": 0.001}
DESCRIBE_TIMEOUT_S = 2.0


class RayQueueLink:
    """The API's ``QueueLink`` over the queue actor and the model deployments' handles. It
    keeps the queue and the webhook sender alive: Ray restarts them after a crash; this
    recreates one that was killed for good (``ray.kill(no_restart=True)``)."""

    def __init__(self, settings: Settings, registry: Registry,
                 detectors: dict[int, DeploymentHandle],
                 classifiers: dict[int, DeploymentHandle], concurrency: int):
        self.settings = settings
        self.concurrency = concurrency
        self.detectors, self.classifiers = detectors, classifiers
        self.handles = {**detectors, **classifiers}
        self.input_sides = {spec.id: spec.image_size for spec in registry.models}
        self.model_names = {spec.id: spec.name for spec in registry.models}
        self.actor = self._get_or_create()
        self.actor.configure.remote(*self._queue_args())
        self.sender: ActorHandle = self._get_or_create_sender()

    def _queue_args(self) -> tuple[Any, ...]:
        return (self.detectors, self.classifiers, self.input_sides, self.concurrency,
                self.model_names)

    async def wait_finished(self, task_id: int, timeout: float, *,
                            notify: bool = False) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] | None = await self.actor.wait_finished.remote(
                task_id, timeout, notify)
            return body
        except Exception:  # noqa: BLE001 - queue restarting: the caller reads the DB anyway
            log.info("long poll for task %d ended early: the queue did not answer", task_id)
            return None

    def _get_or_create(self) -> ActorHandle:
        from deployments.task_queue import TaskQueue

        return TaskQueue.options(  # type: ignore[attr-defined]
            name=self.settings.queue_actor_name, namespace=self.settings.ray_namespace,
            lifetime="detached", get_if_exists=True, resources=ON_HEAD,
        ).remote(*self._queue_args())

    def _get_or_create_sender(self) -> ActorHandle:
        from deployments.webhook_sender import WebhookSenderActor

        return WebhookSenderActor.options(  # type: ignore[attr-defined]
            name=self.settings.webhook_actor_name, namespace=self.settings.ray_namespace,
            lifetime="detached", get_if_exists=True, resources=ON_HEAD,
        ).remote()

    def notify(self) -> None:
        self.actor.notify.remote()  # fire and forget: the queue also polls

    def cancel(self, task_id: int) -> None:
        metrics.tasks_total().inc(1, tags={"outcome": "canceled"})
        self.forget(task_id)

    def forget(self, task_id: int) -> None:
        self.actor.abandon.remote(task_id)  # fire and forget: lease renewal also finds it

    async def ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.actor.ready.remote(), DESCRIBE_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - restarting, gone or slow: not ready
            return False

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        async def one(model_id: int, handle: DeploymentHandle) -> tuple[int, dict[str, Any]]:
            try:
                return model_id, await asyncio.wait_for(handle.describe.remote(),
                                                        DESCRIBE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - not ready yet: say so rather than fail
                return model_id, {"ready": False}

        return dict(await asyncio.gather(*(one(i, h) for i, h in self.handles.items())))

    async def supervise(self) -> None:
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            try:
                await asyncio.wait_for(self.actor.ready.remote(), timeout=30)
            except ray.exceptions.RayActorError:
                log.warning("task queue actor is gone; creating it again")
                self.actor = self._get_or_create()
                await self.actor.configure.remote(*self._queue_args())
            except Exception:  # noqa: BLE001 - restarting or slow: look again next round
                log.info("task queue did not answer; it may be restarting")
            try:
                await asyncio.wait_for(self.sender.ready.remote(), timeout=30)
            except ray.exceptions.RayActorError:
                log.warning("webhook sender actor is gone; creating it again")
                self.sender = self._get_or_create_sender()
            except Exception:  # noqa: BLE001
                log.info("webhook sender did not answer; it may be restarting")


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(self, models: list[dict[str, Any]], detectors: dict[int, DeploymentHandle],
                 classifiers: dict[int, DeploymentHandle], queue_concurrency: int):
        self.settings = get_settings()
        self.registry = Registry(ModelSpec.model_validate(m) for m in models)
        self.engine = make_engine(self.settings.database_url,
                                  pool_size=self.settings.database_pool_size)
        self.sessions = make_session_factory(self.engine)
        self.read_sessions = make_session_factory(make_engine(
            self.settings.database_url, pool_size=self.settings.database_pool_size,
            autocommit=True))
        self.queue = RayQueueLink(self.settings, self.registry, detectors, classifiers,
                                  queue_concurrency)
        self._supervisor = asyncio.get_running_loop().create_task(self.queue.supervise())

    def __serve_build_asgi_app__(self):
        return create_app(settings=self.settings, registry=self.registry,
                          session_factory=self.sessions, read_session_factory=self.read_sessions,
                          queue=self.queue)

    def check_health(self) -> None:
        if self._supervisor.done():
            raise RuntimeError("the queue supervisor stopped")
