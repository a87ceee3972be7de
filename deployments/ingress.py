"""The HTTP ingress: the FastAPI app, hosted by Ray Serve, plus the link to the task queue."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from config.registry import ModelSpec, Registry
from config.settings import Environment, get_settings
from serve_app.auth.service import ensure_user
from serve_app.catalog.service import sync_models
from serve_app.database import make_engine, make_session_factory
from serve_app.main import create_app

log = logging.getLogger("ray.serve")

SUPERVISE_SECONDS = 5.0
DESCRIBE_TIMEOUT_S = 2.0


# Long polls hold a request open while they wait, cheaply (async): allow many at once.
@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1000)
@serve.ingress()
class Ingress:
    def __init__(self, models: list[dict[str, Any]], detectors: dict[int, DeploymentHandle],
                 classifiers: dict[int, DeploymentHandle]):
        self.settings = get_settings()
        self.registry = Registry([ModelSpec.model_validate(m) for m in models])
        self.engine = make_engine(self.settings.database_url,
                                  pool_size=self.settings.database_pool_size)
        self.sessions = make_session_factory(self.engine)
        self.detectors, self.classifiers = detectors, classifiers
        self.handles = {**detectors, **classifiers}
        with self.sessions() as db:
            sync_models(db=db, registry=self.registry)
            if self.settings.environment is Environment.development:
                created = ensure_user(db=db, username=self.settings.demo_user,
                                      password=self.settings.demo_password.get_secret_value())
                if created:
                    log.warning("development mode: created demo user %r (password from "
                                "PRIMITIVES_DEMO_PASSWORD, default '111')",
                                self.settings.demo_user)
        self.queue = self._queue_actor()
        self.queue.configure.remote(detectors, classifiers)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    def __serve_build_asgi_app__(self):
        return create_app(settings=self.settings, registry=self.registry,
                          session_factory=self.sessions, notify_queue=self.notify_queue,
                          describe_models=self.describe_models,
                          wait_finished=self.wait_finished)

    def _queue_actor(self):
        from deployments.task_queue import TaskQueue

        return TaskQueue.options(
            name=self.settings.queue_actor_name, namespace=self.settings.ray_namespace,
            lifetime="detached", get_if_exists=True,
        ).remote(self.detectors, self.classifiers)

    def notify_queue(self) -> None:
        self.queue.notify.remote()  # fire and forget: the queue also polls

    async def wait_finished(self, task_id: int, timeout: float) -> None:
        try:
            await self.queue.wait_finished.remote(task_id, timeout)
        except Exception:  # noqa: BLE001 - queue restarting: the caller reads the DB anyway
            log.info("long poll for task %d ended early: the queue did not answer", task_id)

    async def _supervise(self) -> None:
        """Keep the queue actor alive: Ray restarts it after a crash; this recreates it if it
        was killed for good (``ray.kill(no_restart=True)``) and wakes it periodically."""
        while True:
            await asyncio.sleep(SUPERVISE_SECONDS)
            try:
                await asyncio.wait_for(self.queue.ready.remote(), timeout=30)
            except ray.exceptions.RayActorError:
                log.warning("task queue actor is gone; creating it again")
                self.queue = self._queue_actor()
                await self.queue.configure.remote(self.detectors, self.classifiers)
            except Exception:  # noqa: BLE001 - restarting or slow: look again next round
                log.info("task queue did not answer; it may be restarting")

    async def describe_models(self) -> dict[int, dict[str, Any]]:
        async def one(model_id: int, handle: DeploymentHandle) -> tuple[int, dict[str, Any]]:
            try:
                return model_id, await asyncio.wait_for(handle.describe.remote(),
                                                        DESCRIBE_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - not ready yet: say so rather than fail
                return model_id, {"ready": False}

        return dict(await asyncio.gather(*(one(i, h) for i, h in self.handles.items())))

    def check_health(self) -> None:
        if self._supervisor.done():
            raise RuntimeError("the queue supervisor stopped")
